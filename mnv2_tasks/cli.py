"""Command lines of the package, installed as console scripts (``pyproject.toml``) and run by the
thin scripts of a checkout (``train.py``, ``tools/*.py``):

    mnv2-train task=detection                  # python train.py ...          (Hydra overrides)
    mnv2-eval task=detection ckpt=<file>       # python tools/eval.py ...
    mnv2-export <ckpt> [--precision int8]      # python tools/export.py ...
    mnv2-predict <model> <images|video|0>      # python tools/predict.py ...
    mnv2-benchmark --task deploy               # python tools/benchmark.py ...
    mnv2-browse task=detection data=yolo ...   # python tools/browse.py ...   (samples with their labels drawn)
    mnv2-convert <src> <out> --to yolo         # python tools/convert.py ...  (COCO / YOLO / VOC XML)

The Hydra configuration (``conf/`` in a checkout) ships inside the wheel as ``mnv2_tasks/conf``, so these work from any
directory after ``pip install``; runs go to ``./outputs/<task>/<time>``. Your own config groups
and ``experiment=`` files: ``mnv2-train --config-dir /my/conf experiment=mine`` (or
``hydra.searchpath=[file:///my/conf]``) adds a directory to Hydra's search path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR

__all__ = ["train_main", "eval_main", "export_main", "predict_main", "benchmark_main", "browse_main"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    """Train a task (``conf/train.yaml``); returns the value of ``optimized_metric`` for Hydra's sweepers."""
    from .divergence import DivergedError
    from .train import train

    try:
        metrics = train(cfg)
    except DivergedError as e:  # one line, and a non-zero exit: the run's metrics.json says "ended": "diverged"
        raise SystemExit(f"error: {e}") from None
    key = cfg.get("optimized_metric")  # the value Hydra's sweepers optimise, if asked: optimized_metric=top1
    return metrics.get(key) if key else None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    """Evaluate a model file on the validation set (``conf/eval.yaml``); print and write ``eval_metrics.json``."""
    from hydra.core.hydra_config import HydraConfig

    from .evaluate import evaluate, with_recorded_run, write_metrics

    metrics = evaluate(with_recorded_run(cfg, list(HydraConfig.get().overrides.task)))
    path = write_metrics(metrics, cfg.paths.output_dir)
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"written: {path}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="browse")
def browse_main(cfg: DictConfig) -> None:
    """Draw samples after augmentation with their labels (``conf/browse.yaml``); print the PNG's path."""
    from .browse import browse
    from .data.images import DataError

    try:
        path = browse(cfg, int(cfg.num_images), str(cfg.split), cfg.get("out"))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"written: {path}")


EXPORT_HELP = """Export a checkpoint of this package for its deployment targets, float or int8, and check each file in its runtime.

    mnv2-export outputs/classification/.../checkpoints/last.ckpt                 # fp32 and int8
    mnv2-export last.ckpt --precision int8 --calibration-images 128               # PTQ on the fly
    mnv2-export qat_run/checkpoints/last.ckpt --precision int8                   # QAT checkpoint
    mnv2-export det.ckpt --outputs decoded       # decoded boxes + per-class scores, no NMS
    mnv2-export seg.ckpt --outputs argmax        # (N, H, W) int64 masks instead of logits
    mnv2-export last.ckpt data.root=/data/coco   # data overrides: where the val/calibration images are
    mnv2-export last.ckpt --format <target>[,<target>...]    # the targets below
    mnv2-export last.ckpt --format all            # every target from one int8 scheme

{targets}

The task, network and input size come from the checkpoint; every file is run in its runtime at batch 1 and batch
--check-images against PyTorch and the differences are printed. An int8 export of a QAT
checkpoint needs targets its QAT scheme serves (quant.targets at training time).
"""


def export_parser() -> argparse.ArgumentParser:
    from .quant.onnx_export import OPSET

    from .quant.targets import TARGETS

    targets = "\n".join(f"  {t.name:<12} {t.display}: {', '.join(t.file('<stem>', p) for p in t.precisions)}"
                         + (f" (pip install 'mnv2_tasks[{t.extra}]')" if t.extra else "") for t in TARGETS.values())
    p = argparse.ArgumentParser(prog="mnv2-export", description=EXPORT_HELP.format(targets="deployment targets:\n" + targets),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="training checkpoint (.ckpt) of this package: float or QAT")
    p.add_argument("--precision", choices=["fp32", "int8", "both"], default="both")
    p.add_argument("--format", default="onnx", help=f"deployment target(s), comma-separated: {', '.join(TARGETS)}, "
                   "or all (default: onnx)")
    p.add_argument("--outputs", default=None, help="classification: logits; detection: nms (default) or decoded; "
                   "segmentation: logits (default) or argmax; multitask: nms+logits (default) or nms+argmax")
    p.add_argument("--postprocess", choices=["eval", "deploy"], default=None,
                   help="detection: the NMS preset baked into the graph (default: the checkpoint's, 'eval')")
    p.add_argument("--out-dir", default=None, help="default: next to the checkpoint (<ckpt stem>.<precision>.onnx)")
    p.add_argument("--calibration-images", type=int, default=64, help="PTQ (int8 from a float checkpoint)")
    p.add_argument("--check-images", type=int, default=8, help="validation images the ORT-vs-PyTorch check runs on")
    p.add_argument("--task", default=None, help="assert the checkpoint's task (error if it differs)")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the report to this file")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the task's config: data.root=..., paths.data_dir=...")
    return p


def export_main(argv: list[str] | None = None) -> dict:
    """``mnv2-export``: a checkpoint to ONNX files, each checked in ONNX Runtime; returns the report."""
    from .checkpoint import CheckpointError
    from .quant.export import export_checkpoint

    args = export_parser().parse_intermixed_args(argv)
    try:
        report = export_checkpoint(args.ckpt, args.precision, args.outputs, args.postprocess, args.out_dir,
                                   args.calibration_images, args.check_images, args.task, args.opset, args.threads,
                                   args.overrides, formats=args.format)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def predict_main(argv: list[str] | None = None) -> None:
    """``mnv2-predict``: a model file on images, folders, videos, cameras, streams (``mnv2_tasks.predict_cli``)."""
    import sys

    from .predict_cli import main

    sys.exit(main(argv))


def benchmark_main(argv: list[str] | None = None) -> None:
    """``mnv2-benchmark``: the benchmark tables (``mnv2_tasks.benchmarks``); ``--help`` lists every option."""
    from .benchmarks.cli import main

    main(argv)


if __name__ == "__main__":  # python -m mnv2_tasks.cli <overrides>: training, as torchrun -m runs it (examples/kubeflow)
    train_main()
