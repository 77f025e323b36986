"""Quantization-aware training as a Lightning callback (``quant=qat``).

At ``setup("fit")`` the task's network is loaded from ``from_ckpt`` (a float checkpoint of
the same task), captured with ``torch.export`` and prepared with torchao's
``prepare_qat_pt2e`` and ``OrtQuantizer``; the prepared graph replaces ``pl_module.net``
(behind ``QuantNet``), before Lightning restores a checkpoint or builds the optimizer, so
training, validation, checkpoints and resume work on it unchanged. Batch-norm statistics and
observers freeze at configured epochs. At the end of fitting the graph is converted and the
float and int8 ONNX files are written to the run directory and evaluated in ONNX Runtime
through the task's own metric code (``final_metrics()``, merged into ``metrics.json``).
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from ..checkpoint import QUANT_KEY, ModelRecord, load_float_weights
from .finish import QuantCallback, example_batch
from .pt2e import (
    QuantNet, calibrate_activation_ranges, disable_observers, fix_activation_ranges, freeze_bn_stats, prepare, set_mode,
)
from .ptq import calibration_batches

log = logging.getLogger(__name__)

__all__ = ["QATCallback"]


class QATCallback(QuantCallback):
    """Args (besides ``QuantCallback``'s):
        from_ckpt: float checkpoint of this task to start from (``None``: the network as built,
            e.g. with ``model.pretrained``; only sensible for smoke tests).
        resume_ckpt: the run's ``ckpt_path`` (a QAT checkpoint to resume); set by ``conf/quant/qat.yaml``.
        freeze_bn_epoch: from this epoch on, batch-norm running statistics stop updating (``None``: never). A
            network with batch-norm eps other than torchao's 1e-5 (the SSDLite's 1e-3) has them frozen from the start.
        freeze_observer_epoch: from this epoch on, scales and zero points stay fixed (``None``: never).
        act_ranges: ``"calibrated"``: activation ranges from a PTQ calibration (histogram observers) on
            ``calibration_images`` training images before the first step, then fixed while the weights
            adapt to them; ``"observed"``: torchao's moving-average min/max, updated by every training
            batch until ``freeze_observer_epoch``. Weight ranges are observed in both.
        calibration_images: training images for ``act_ranges="calibrated"``.
    """

    mode = "qat"

    def __init__(self, from_ckpt: str | None = None, resume_ckpt: str | None = None, freeze_bn_epoch: int | None = 3,
                 freeze_observer_epoch: int | None = 4, act_ranges: str = "observed", calibration_images: int = 64,
                 **kwargs) -> None:
        super().__init__(from_ckpt, **kwargs)
        if act_ranges not in ("calibrated", "observed"):
            raise ValueError(f"quant.act_ranges must be 'calibrated' or 'observed', got {act_ranges!r}")
        self.act_ranges = act_ranges
        self.calibration_images = int(calibration_images)
        self.resume_ckpt = resume_ckpt
        self.freeze_bn_epoch = freeze_bn_epoch
        self.freeze_observer_epoch = freeze_observer_epoch
        self._float_net: torch.nn.Module | None = None

    # ---- setup: swap the network for its QAT graph ------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._float_net is not None:  # the network is already its QAT graph
            return
        if pl_module.freeze_backbone:
            raise ValueError("quant=qat with model.freeze_backbone=true is not supported: QAT fine-tunes the whole network")
        if self.resume_ckpt:
            info = ModelRecord.read(self.resume_ckpt).quant  # the defaults of older files filled in
            if info is None:
                raise ValueError(
                    f"{self.resume_ckpt}: a float checkpoint given as ckpt_path to a quant=qat run; to start QAT from it "
                    f"pass quant.from_ckpt={self.resume_ckpt} (ckpt_path resumes an interrupted QAT run)"
                )
            if info.get("mode") != "qat":
                raise ValueError(f"{self.resume_ckpt}: a {info.get('mode')} checkpoint, not a QAT one; it cannot be resumed with quant=qat")
            if info.get("act_ranges", "observed") != self.act_ranges:
                raise ValueError(f"{self.resume_ckpt}: trained with quant.act_ranges={info.get('act_ranges', 'observed')}, "
                                 f"this run has {self.act_ranges}; resume with quant.act_ranges={info.get('act_ranges', 'observed')}")
            scheme = info["scheme"]
            if scheme != self.scheme:
                raise ValueError(f"{self.resume_ckpt}: quantized in scheme {scheme!r}, but this run's targets "
                                 f"{self.targets} give {self.scheme!r}; resume with quant.scheme={scheme}")
        if self.from_ckpt:  # also when resuming: the float network is the fp32 reference and export
            load_float_weights(pl_module, self.from_ckpt)
        pl_module.channels_last = False  # the captured graph is in the default memory format
        net = pl_module.net.to(memory_format=torch.contiguous_format)
        self._float_net = net.eval()
        example = example_batch(trainer)
        prepared = prepare(net, example, qat=True, scheme=self.scheme)
        if self.act_ranges == "calibrated":
            if self.resume_ckpt:  # the checkpoint brings the calibrated ranges back
                fix_activation_ranges(prepared)
            else:
                batches = calibration_batches(trainer.datamodule.train_dataloader(), self.calibration_images)
                n = calibrate_activation_ranges(prepared, batches)
                log.info("QAT: %d activation ranges calibrated on %d images and fixed", n, sum(b.shape[0] for b in batches))
        if prepared.meta.get("mnv2_bn_eps_moved") and self.freeze_bn_epoch != 0:
            # in train mode torchao's pattern would normalise by batch statistics with its own eps: the statistics
            # of a layer whose eps was moved into its running variance stay as they are (BENCHMARKS.md, session 5:
            # the detector within 0.001 mAP of fp32 in every runtime this way, 0.013-0.016 below with epoch 2)
            log.info("QAT: %d batch-norm layers had an eps other than torchao's 1e-5: their statistics are frozen from "
                     "the start (quant.freeze_bn_epoch=%s ignored)", prepared.meta["mnv2_bn_eps_moved"], self.freeze_bn_epoch)
            self.freeze_bn_epoch = 0
        pl_module.net = QuantNet(prepared, net)
        self._image_size = list(example.shape[-2:])
        log.info("QAT: %s prepared (%d fake-quant modules)", type(net).__name__,
                 sum(1 for m in prepared.modules() if type(m).__name__.endswith("FakeQuantize")))

    # ---- the recipe's late-training freezes ----------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        graph = pl_module.net.graph
        epoch = trainer.current_epoch
        if self.freeze_bn_epoch is not None and epoch >= self.freeze_bn_epoch and not graph.meta.get("mnv2_bn_frozen"):
            freeze_bn_stats(graph)
            log.info("QAT: batch-norm statistics frozen at epoch %d", epoch)
        if self.freeze_observer_epoch is not None and epoch >= self.freeze_observer_epoch and not graph.meta.get("mnv2_observers_frozen"):
            disable_observers(graph)
            log.info("QAT: observers frozen at epoch %d", epoch)
        set_mode(graph, True)

    # ---- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        info = {"mode": "qat", "image_size": self._image_size, "torch": str(torch.__version__), "scheme": self.scheme,
                "targets": list(self.targets), "act_ranges": self.act_ranges}
        checkpoint[QUANT_KEY] = info
        checkpoint.setdefault("mnv2_tasks", {})["quant"] = info

    def state_dict(self) -> dict:
        return {"from_ckpt": self.from_ckpt}

    # ---- end of fitting: convert, export, evaluate in ONNX Runtime -----------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.export:
            self.finish(trainer, pl_module, self._float_net, pl_module.net.graph, example_batch(trainer))
