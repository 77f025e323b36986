"""The end of a ``quant=qat`` / ``quant=ptq`` run: convert, write every target's float and int8 files, evaluate each.

Every metric goes through the task module's own metric code (``evaluate_with``):
``torch_fp32_*`` (the float network), ``torch_int8_*`` (the converted PT2E graph in PyTorch),
and ``<target>_<precision>_*`` for each file of each deployment target (``quant.targets``,
``targets.TARGETS``) run in its own runtime: ``onnx_int8_*`` (ONNX Runtime), and so on for every target.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.fx import GraphModule

from ..checkpoint import MODEL_FIELD, OLD_FILE_SCHEME, model_json
from ..models.contract import pad_batch
from .runners import open_model
from .pt2e import QuantNet, convert
from .targets import check_targets, runs_here, scheme_for, target_file, targets_metadata, write_targets

log = logging.getLogger(__name__)

__all__ = ["example_batch", "evaluate_and_export", "QuantCallback", "FP32_FILE", "INT8_FILE"]

FP32_FILE = target_file("model", "onnx", "fp32")
INT8_FILE = target_file("model", "onnx", "int8")


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
    targets: tuple[str, ...] | list[str] = ("onnx",),
) -> dict:
    """Convert ``prepared``, write every target's ``model.fp32.*`` / ``model.int8.*`` into ``out_dir``,
    evaluate each in its runtime; return flat metrics."""
    out_dir = Path(out_dir)
    targets = check_targets(targets)
    scheme = prepared.meta.get("mnv2_scheme", OLD_FILE_SCHEME)
    scheme_for(targets, scheme)  # every target takes the scheme the graph was quantized in
    float_net = float_net.cpu().eval()
    t0 = time.perf_counter()
    converted = convert(prepared.cpu())
    input_spec = datamodule.input_spec() if datamodule is not None else pl_module.input_spec
    record = model_json(pl_module.task_name, pl_module.net_spec, input_spec, {"mode": mode, "scheme": scheme, "targets": targets})
    meta = {"quant": mode, MODEL_FIELD: record, **targets_metadata(targets, scheme)}
    files = {}
    for precision, core in (("fp32", None), ("int8", converted)):
        for target, path in write_targets(targets, core, float_net, example, out_dir, precision, meta).items():
            files[f"{target}_{precision}"] = path
    metrics: dict = {f"{k}_file": p.name for k, p in files.items()}
    metrics.update({"onnx_opset": 20, "quant_scheme": scheme, "quant_targets": ",".join(targets),
                    "export_s": round(time.perf_counter() - t0, 1)})
    log.info("%s: wrote %s", mode, ", ".join(str(p) for p in files.values()))
    if not evaluate or datamodule is None:
        return metrics
    loader = datamodule.val_dataloader()
    int8_torch = QuantNet(converted, float_net).eval()
    runners = {"torch_fp32": float_net, "torch_int8": int8_torch}
    runners.update({k: open_model(p, ort_threads) for k, p in files.items() if runs_here(k)})
    for k in [k for k in files if not runs_here(k)]:
        log.info("%s: %s written and its spec checked; its runtime does not run on this machine, so it is not evaluated",
                 mode, files[k].name)
    was_training = pl_module.training
    pl_module.eval()
    try:
        for prefix, fn in runners.items():
            t1 = time.perf_counter()
            metrics.update(_scalars(prefix, pl_module.evaluate_with(fn, loader, progress=False)))
            log.info("%s: evaluated %s in %.1f s", mode, prefix, time.perf_counter() - t1)
    finally:
        pl_module.train(was_training)
    log.info("%s metrics: %s", mode, metrics)
    return metrics


class QuantCallback(Callback):
    """What ``QATCallback`` and ``PTQCallback`` share: the float checkpoint to start from, the
    deployment targets and their int8 scheme, and the end of the run (``finish``: export and
    evaluate on rank 0 unless ``export=False``), whose figures ``final_metrics`` returns for
    ``train(cfg)``'s ``metrics.json``.

    Args:
        from_ckpt: float checkpoint of this task to load at setup.
        export: write every target's ``model.fp32.*`` and ``model.int8.*`` at the end of fitting.
        evaluate: evaluate each in its runtime on the validation set (``<target>_{fp32,int8}_<metric>``).
        output_dir: where the files go (default: the trainer's root dir, the run dir).
        ort_threads: threads of the evaluating runtimes.
        targets: deployment targets (names in ``targets.TARGETS``, or ``all``).
        scheme: int8 scheme (``u8``, ``s8``, ``s8sym``); ``auto``: the first every target takes.
    """

    mode = "qat"

    def __init__(self, from_ckpt: str | None = None, export: bool = True, evaluate: bool = True,
                 output_dir: str | None = None, ort_threads: int = 2, targets=("onnx",), scheme: str = "auto") -> None:
        super().__init__()
        self.targets = check_targets(list(targets) if not isinstance(targets, str) else targets)
        self.scheme = scheme_for(self.targets, scheme)
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
            targets=self.targets,
        )

    def final_metrics(self) -> dict:
        """``torch_{fp32,int8}_<metric>``, ``<target>_{fp32,int8}_<metric>`` and the file names."""
        return dict(self._metrics)
