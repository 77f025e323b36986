"""Evaluate a checkpoint on a validation set with the task's own metric code; print and write the metrics.

    python tools/eval.py task=classification ckpt=outputs/.../checkpoints/last.ckpt
    python tools/eval.py task=classification data=imagefolder data.root=/data/imagenet \
        model.net.num_classes=1000 model.net.width_mult=1.0 ckpt=mobilenet_v2-b0353104.pth
    python tools/eval.py task=detection ckpt=model.int8.onnx     # runs in ONNX Runtime

Writes ``eval_metrics.json`` to the run directory (``paths.output_dir``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnv2_tasks.checkpoint import check_compatible, read_checkpoint  # noqa: E402
from mnv2_tasks.models.pretrained import load_pretrained  # noqa: E402

log = logging.getLogger("eval")


def evaluate(cfg: DictConfig) -> dict:
    """Build the task's module and data from ``cfg``, load ``cfg.ckpt``, evaluate on the val split."""
    ckpt = Path(cfg.ckpt)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device))
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    net_spec = OmegaConf.to_container(cfg.model.net, resolve=True)
    if ckpt.suffix == ".onnx":
        from mnv2_tasks.quant.ort_runner import onnx_predict_fn

        fn = onnx_predict_fn(ckpt, task=module.task_name)
    else:
        if ckpt.suffix == ".ckpt":
            check_compatible(ckpt, module.task_name, net_spec)
            state = read_checkpoint(ckpt)["state_dict"]
            module.load_state_dict(state)
        else:  # a torchvision / timm / package weight file
            report = load_pretrained(module.net, ckpt)
            if report.missing:
                raise SystemExit(f"{ckpt}: these weights are missing for the configured model: {report.missing}")
        module.to(device).eval()

        def fn(images: torch.Tensor):
            return module.net(images.to(device))

    datamodule.prepare_data()
    datamodule.setup("validate")
    module.eval_output_dir = cfg.paths.output_dir  # where tasks may write prediction files
    metrics = module.evaluate_with(fn, datamodule.val_dataloader())
    metrics["ckpt"] = str(ckpt)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    metrics = evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # NaN (a class absent from the set, a size range without ground truth) is written as null
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / "eval_metrics.json").write_text(json.dumps(clean, indent=2, default=float))
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"written: {out / 'eval_metrics.json'}")


if __name__ == "__main__":
    main()
