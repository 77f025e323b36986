"""Export a checkpoint of this package to ONNX (opset 20, dynamic batch), float or int8, and check it in ONNX Runtime.

    python tools/export.py outputs/classification/.../checkpoints/last.ckpt                  # fp32 and int8
    python tools/export.py last.ckpt --precision int8 --calibration-images 128                # PTQ on the fly
    python tools/export.py qat_run/checkpoints/last.ckpt --precision int8                    # QAT checkpoint
    python tools/export.py det.ckpt --outputs decoded       # decoded boxes + per-class scores, no NMS
    python tools/export.py seg.ckpt --outputs argmax        # (N, H, W) int64 masks instead of logits
    python tools/export.py last.ckpt data.root=/data/coco   # data overrides: where the val/calibration images are

The task, network and input size come from the checkpoint (``mnv2_tasks.quant.export``); every
file is run in ONNX Runtime at batch 1 and batch ``--check-images`` against PyTorch and the
differences are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnv2_tasks.checkpoint import CheckpointError
from mnv2_tasks.quant.export import export_checkpoint
from mnv2_tasks.quant.onnx_export import OPSET


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="training checkpoint (.ckpt) of this package: float or QAT")
    p.add_argument("--precision", choices=["fp32", "int8", "both"], default="both")
    p.add_argument("--outputs", default=None,
                   help="classification: logits; detection: nms (default) or decoded; segmentation: logits (default) or argmax")
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
    return p.parse_intermixed_args(argv)


def run(args: argparse.Namespace) -> dict:
    report = export_checkpoint(args.ckpt, args.precision, args.outputs, args.postprocess, args.out_dir,
                               args.calibration_images, args.check_images, args.task, args.opset, args.threads,
                               args.overrides)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
