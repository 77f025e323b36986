"""A guard against divergence: a run whose loss or weights stop being finite stops, says where and why, and never
writes a non-finite checkpoint over a finite one.

``DivergenceGuard`` (a callback ``train(cfg)`` always adds) checks the training loss after every step and the
network's weights and BatchNorm statistics at the end of every training epoch, before any checkpoint of that
epoch is written (Lightning runs checkpoint callbacks last). Under DDP every rank agrees before one stops.
``AtomicCheckpointIO`` (``atomic_files.py``) refuses a checkpoint whose weights or statistics are not finite,
whoever asks for it. ``train(cfg)`` records how the run ended in ``metrics.json`` (``ended``) and re-raises.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

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
    """Stop a diverging run with a message naming the epoch, the step and the likely cause (see the module).

    The training step pays no synchronisation for it: each step's finiteness is folded into a flag on the loss's
    device (with the first bad step and its loss), read every ``trainer.log_every_n_steps`` steps, before a validation
    and at the epoch's end, where under DDP the ranks agree in one reduction.
    """

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # (step, loss) of the first non-finite loss; step -1: none yet

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = torch.as_tensor(loss).detach().float().sum()
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.tensor([-1.0, 0.0], device=loss.device)
        new = (self._first_bad[0] < 0) & ~torch.isfinite(loss)
        self._first_bad = torch.where(new, torch.stack([torch.tensor(float(trainer.global_step), device=loss.device), loss]),
                                      self._first_bad)
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._check_loss(trainer, pl_module)

    def _check_loss(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step, value = (self._first_bad.tolist() if self._first_bad is not None else (-1.0, 0.0))
        if trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            where = f"step {int(step)}: the training loss is {value}" if step >= 0 else "another rank's training loss"
            raise DivergedError(f"the run diverged at epoch {trainer.current_epoch}, {where} (not finite); "
                                f"{_cause(trainer, pl_module)}")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:  # before a validation that may save the best checkpoint
            self._check_loss(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_loss(trainer, pl_module)
        bad = non_finite_tensors(pl_module.net.state_dict())
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise DivergedError(f"the run diverged by the end of epoch {trainer.current_epoch} (step {trainer.global_step}): "
                                f"{len(bad)} weight / BatchNorm-statistics tensors hold inf or NaN ({bad[:3]}); no checkpoint of "
                                f"this epoch was written; {_cause(trainer, pl_module)}")
