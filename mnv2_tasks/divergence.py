"""A guard against divergence: a run whose loss or weights stop being finite stops, says where and why, and never
writes a non-finite checkpoint over a finite one.

``DivergenceGuard`` (a callback ``train(cfg)`` always adds) checks the training loss after every step and the
network's weights and BatchNorm statistics at the end of every training epoch, before any checkpoint of that
epoch is written (Lightning runs checkpoint callbacks last). Under DDP every rank agrees before one stops.
``AtomicCheckpointIO`` (``atomic_files.py``) refuses a checkpoint whose weights or statistics are not finite,
whoever asks for it. ``train(cfg)`` records how the run ended in ``metrics.json`` (``ended``) and re-raises.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["DivergedError", "DivergenceGuard", "non_finite_tensors"]

# the state-dict entries that hold weights and statistics (QAT observers start at +-inf by design: not these)
_CHECKED_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


class DivergedError(RuntimeError):
    """The run diverged (a non-finite loss, weights or statistics); the message names where and the likely cause."""


def non_finite_tensors(state: dict) -> list[str]:
    """The names of weight / bias / BatchNorm-statistics tensors in ``state`` that hold inf or NaN."""
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
            and k.endswith(_CHECKED_SUFFIXES) and not bool(torch.isfinite(v).all())]


def _cause(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
    lr = f"{max(lrs):.3g}" if lrs else "?"
    precision = trainer.precision
    cause = f"likely cause: the learning rate (now {lr}; model.optimizer.lr) is too high for this network and batch size"
    if precision not in ("32-true", "32", "64-true"):
        cause += f", or reduced precision overflowed (trainer.precision={precision}; try 32-true)"
    return cause + "; lower the learning rate (or add warm-up: model.scheduler.warmup_epochs) and train again"


class DivergenceGuard(Callback):
    """Stop a diverging run with a message naming the epoch, the step and the likely cause (see the module)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = not bool(torch.isfinite(torch.as_tensor(loss).detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            value = float(torch.as_tensor(loss).detach().float().sum()) if bad else math.nan
            raise DivergedError(f"the run diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: the training "
                                f"loss is {value} on {'this' if bad else 'another'} rank; {_cause(trainer, pl_module)}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = non_finite_tensors(pl_module.net.state_dict())
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise DivergedError(f"the run diverged by the end of epoch {trainer.current_epoch} (step {trainer.global_step}): "
                                f"{len(bad)} weight / BatchNorm-statistics tensors hold inf or NaN ({bad[:3]}); no checkpoint of "
                                f"this epoch was written; {_cause(trainer, pl_module)}")
