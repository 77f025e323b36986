"""Evaluate a model file on a validation set with the task's own metric code; print and write the metrics.

    python tools/eval.py task=classification ckpt=outputs/.../checkpoints/last.ckpt
    python tools/eval.py task=classification data=imagefolder data.root=/data/imagenet \
        data.num_classes=1000 model.net.width_mult=1.0 ckpt=mobilenet_v2-b0353104.pth
    python tools/eval.py task=detection ckpt=model.int8.onnx     # runs in ONNX Runtime

Writes ``eval_metrics.json`` to the run directory (``paths.output_dir``); see ``mnv2_tasks.evaluate``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnv2_tasks.evaluate import evaluate, write_metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    metrics = evaluate(cfg)
    path = write_metrics(metrics, cfg.paths.output_dir)
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
