"""Post-training static quantization (``quant=ptq``): calibrate on N training images, convert, export, evaluate.

``ptq_convert`` is the plain function (used by ``tools/export.py`` for an int8 export of a
float checkpoint); ``PTQCallback`` runs it at the end of a training run (or of a run with
``trainer.max_epochs=0`` from ``quant.from_ckpt``) and reports like ``QATCallback``.
"""

from __future__ import annotations

import logging
from typing import Iterable

import lightning as L
import torch
from torch import nn
from torch.fx import GraphModule

from ..checkpoint import load_float_weights
from .finish import QuantCallback, example_batch
from .pt2e import calibrate, convert, prepare

log = logging.getLogger(__name__)

__all__ = ["PTQCallback", "ptq_prepare", "ptq_convert", "calibration_batches"]


def calibration_batches(loader: Iterable, num_images: int) -> list[torch.Tensor]:
    """The first ``num_images`` images of ``loader`` (batches of ``{"image": ...}``), on CPU."""
    out, n = [], 0
    for batch in loader:
        images = batch["image"] if isinstance(batch, dict) else batch
        images = images[: num_images - n].cpu()
        out.append(images)
        n += images.shape[0]
        if n >= num_images:
            break
    if n == 0:
        raise ValueError("PTQ calibration: the data loader gave no images")
    return out


def ptq_prepare(net: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor], scheme: str = "u8") -> GraphModule:
    """Capture, insert observers of ``scheme`` and calibrate on ``batches``: the calibrated (not yet converted) graph."""
    prepared = prepare(net.cpu().eval(), example, qat=False, scheme=scheme)
    n = calibrate(prepared, batches)
    log.info("PTQ: calibrated on %d images", n)
    return prepared


def ptq_convert(net: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor], scheme: str = "u8") -> GraphModule:
    """Calibrated and converted int8 (QDQ) graph of ``net``'s deploy view."""
    return convert(ptq_prepare(net, example, batches, scheme))


class PTQCallback(QuantCallback):
    """Args (besides ``QuantCallback``'s):
        from_ckpt: float checkpoint of this task to load at setup (with ``trainer.max_epochs=0``: quantize it as is).
        num_calibration_images: training images the observers see.
    """

    mode = "ptq"

    def __init__(self, from_ckpt: str | None = None, num_calibration_images: int = 64, **kwargs) -> None:
        super().__init__(from_ckpt, **kwargs)
        self.num_calibration_images = num_calibration_images

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.from_ckpt and not getattr(self, "_loaded", False):
            load_float_weights(pl_module, self.from_ckpt)
            self._loaded = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.export:
            return
        # the captured graph and every exported file are in the default memory format (ExecuTorch's XNNPACK
        # lowering refuses a channels-last network), as QAT's
        pl_module.channels_last = False
        net = pl_module.net.to(memory_format=torch.contiguous_format)
        device = next(net.parameters()).device
        example = example_batch(trainer)
        batches = calibration_batches(trainer.datamodule.train_dataloader(), self.num_calibration_images)
        self.finish(trainer, pl_module, net, ptq_prepare(net, example, batches, self.scheme), example)
        self._metrics["ptq_calibration_images"] = sum(b.shape[0] for b in batches)
        net.to(device)
