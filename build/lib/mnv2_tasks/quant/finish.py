"""The end of a ``quant=qat`` / ``quant=ptq`` run: convert, export float and int8 ONNX, evaluate all four ways.

Every metric goes through the task module's own metric code (``evaluate_with``):
``torch_fp32_*`` (the float network), ``torch_int8_*`` (the converted PT2E graph in PyTorch),
``onnx_fp32_*`` and ``onnx_int8_*`` (the ONNX files in ONNX Runtime).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.fx import GraphModule

from .deploy import export_deploy
from .ort_runner import OrtModel
from ..models.contract import pad_batch
from .pt2e import QuantNet, convert

log = logging.getLogger(__name__)

__all__ = ["example_batch", "evaluate_and_export", "QuantCallback", "FP32_FILE", "INT8_FILE"]

FP32_FILE = "model.fp32.onnx"
INT8_FILE = "model.int8.onnx"


def example_batch(trainer_or_datamodule, n: int = 2) -> torch.Tensor:
    """The first ``n`` validation images (N, 3, H, W), on CPU: the capture and export example."""
    dm = getattr(trainer_or_datamodule, "datamodule", trainer_or_datamodule)
    batch = next(iter(dm.val_dataloader()))
    return pad_batch(batch["image"][:n].cpu(), n)


def _scalars(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()
            if isinstance(v, float) and math.isfinite(v)}


def evaluate_and_export(
    pl_module,
    float_net: nn.Module,
    prepared: GraphModule,
    example: torch.Tensor,
    out_dir: str | Path,
    datamodule=None,
    evaluate: bool = True,
    ort_threads: int = 2,
    mode: str = "qat",
) -> dict:
    """Convert ``prepared``, write ``model.fp32.onnx`` / ``model.int8.onnx`` into ``out_dir``, evaluate; return flat metrics."""
    out_dir = Path(out_dir)
    float_net = float_net.cpu().eval()
    t0 = time.perf_counter()
    converted = convert(prepared.cpu())
    meta = {"quant": mode, "mnv2_input": json.dumps(datamodule.input_spec() if datamodule is not None else pl_module.input_spec)}
    fp32_path = export_deploy(None, float_net, example, out_dir / FP32_FILE, metadata={**meta, "precision": "fp32"})
    int8_path = export_deploy(converted, float_net, example, out_dir / INT8_FILE, metadata={**meta, "precision": "int8"})
    metrics: dict = {"onnx_fp32_file": FP32_FILE, "onnx_int8_file": INT8_FILE, "onnx_opset": 20,
                     "onnx_export_s": round(time.perf_counter() - t0, 1)}
    log.info("%s: wrote %s and %s", mode, fp32_path, int8_path)
    if not evaluate or datamodule is None:
        return metrics
    loader = datamodule.val_dataloader()
    int8_torch = QuantNet(converted, float_net).eval()
    runners = {
        "torch_fp32": float_net,
        "torch_int8": int8_torch,
        "onnx_fp32": OrtModel(fp32_path, ort_threads),
        "onnx_int8": OrtModel(int8_path, ort_threads),
    }
    was_training = pl_module.training
    pl_module.eval()
    try:
        for prefix, fn in runners.items():
            metrics.update(_scalars(prefix, pl_module.evaluate_with(fn, loader, progress=False)))
    finally:
        pl_module.train(was_training)
    log.info("%s metrics: %s", mode, metrics)
    return metrics


class QuantCallback(Callback):
    """What ``QATCallback`` and ``PTQCallback`` share: the float checkpoint to start from, and the
    end of the run (``finish``: export and evaluate on rank 0 unless ``export=False``), whose
    figures ``final_metrics`` returns for ``train(cfg)``'s ``metrics.json``.

    Args:
        from_ckpt: float checkpoint of this task to load at setup.
        export: write ``model.fp32.onnx`` and ``model.int8.onnx`` at the end of fitting.
        evaluate: evaluate both in ONNX Runtime on the validation set (``onnx_{fp32,int8}_<metric>``).
        output_dir: where the ONNX files go (default: the trainer's root dir, the run dir).
        ort_threads: intra-op threads of the evaluating ORT sessions.
    """

    mode = "qat"

    def __init__(self, from_ckpt: str | None = None, export: bool = True, evaluate: bool = True,
                 output_dir: str | None = None, ort_threads: int = 2) -> None:
        super().__init__()
        self.from_ckpt = from_ckpt
        self.export = export
        self.evaluate = evaluate
        self.output_dir = output_dir
        self.ort_threads = ort_threads
        self._metrics: dict = {}

    def finish(self, trainer: L.Trainer, pl_module, float_net: nn.Module, prepared: GraphModule, example: torch.Tensor) -> None:
        """Convert ``prepared``, export both files and evaluate them (rank 0, when ``export``)."""
        self._metrics = evaluate_and_export(
            pl_module, float_net, prepared, example, Path(self.output_dir or trainer.default_root_dir),
            datamodule=trainer.datamodule, evaluate=self.evaluate, ort_threads=self.ort_threads, mode=self.mode,
        )

    def final_metrics(self) -> dict:
        """``onnx_fp32_<metric>``, ``onnx_int8_<metric>``, ``torch_fp32_<metric>``, ``torch_int8_<metric>`` and the file names."""
        return dict(self._metrics)
