"""Resume that tells the truth: ``ckpt_path=...`` with settings other than the checkpoint's.

Every checkpoint records the run's resolved config (``RecordConfig``, under ``checkpoint["mnv2_tasks"]["config"]``).
On resume, ``check_resume`` compares it with this run's and:

- refuses what cannot change mid-run, naming both values: the network (``model.net.*``), the optimizer's type
  (``model.optimizer._target_``), the scheduler's, the input size (``data.image_size``, ``data.crop_size``);
- says plainly what the checkpoint's state overrides: the optimizer's and scheduler's settings (learning rate,
  weight decay, warm-up, ...) come back from the checkpoint, so a new value here does not apply; to train with it,
  start a new run from the weights (``model.pretrained=<ckpt>``);
- lists every other difference (epochs, batch size, paths are applied as this run asks).
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["RecordConfig", "check_resume", "ResumeError", "resolve_ckpt_path"]

log = logging.getLogger(__name__)

_FIXED = ("model.net.", "model.optimizer._target_", "model.scheduler._target_", "data.image_size", "data.crop_size")
_STATE_WINS = ("model.optimizer.", "model.scheduler.")
_IGNORED = ("paths.", "ckpt_path", "hydra.", "trainer.enable_progress_bar", "trainer.accelerator", "trainer.devices")


class ResumeError(ValueError):
    """A resume that would silently run other settings than asked; the message names both values and the fix."""


class RecordConfig(Callback):
    """Write the run's resolved config into every checkpoint (``checkpoint["mnv2_tasks"]["config"]``)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = _container(cfg)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint.setdefault("mnv2_tasks", {})["config"] = self.config


def resolve_ckpt_path(ckpt_path, out_dir) -> str | None:
    """``ckpt_path`` as a file: ``"last"`` is the run folder's newest checkpoint, ``checkpoints/last.ckpt`` (the end
    of the latest epoch) or Lightning's ``hpc_ckpt_<n>.ckpt`` (saved when SLURM signalled a requeue), whichever is
    newer, or None (a start from the beginning, logged) when the folder has neither; any other value is kept."""
    if ckpt_path != "last":
        return ckpt_path
    from pathlib import Path

    out_dir = Path(out_dir)
    found = [p for p in [out_dir / "checkpoints" / "last.ckpt", *out_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not found:
        log.info("ckpt_path=last: no checkpoint in %s yet; starting from the beginning", out_dir)
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)


def _container(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a resolver only Hydra's app context has (hydra:...): keep those unresolved
        return OmegaConf.to_container(cfg, resolve=False)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def check_resume(cfg: DictConfig, ckpt: dict, path) -> list[str]:
    """Compare this run's config with the one ``ckpt`` recorded; raise ``ResumeError`` for what cannot change,
    log the rest; returns the differences as lines (empty: the same settings, or an older checkpoint without a record)."""
    recorded = (ckpt.get("mnv2_tasks") or {}).get("config")
    if not recorded:
        log.warning("%s records no config (an older checkpoint): resuming without comparing settings", path)
        return []
    theirs, ours = _flat(recorded), _flat(_container(cfg))
    diffs = {k: (theirs.get(k, "<unset>"), ours.get(k, "<unset>")) for k in sorted(set(theirs) | set(ours))
             if theirs.get(k, "<unset>") != ours.get(k, "<unset>") and not k.startswith(_IGNORED)}
    # a setting the checkpoint does not record was added to the package since (its default keeps the old behaviour)
    fixed = [f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diffs.items() if k.startswith(_FIXED) and a != "<unset>"]
    if fixed:
        raise ResumeError(f"{path}: these settings cannot change when resuming a run:\n  " + "\n  ".join(fixed)
                          + "\nresume with the checkpoint's values, or start a new run from its weights (model.pretrained=...)")
    lines = []
    for k, (a, b) in diffs.items():
        if k.startswith(_STATE_WINS):
            lines.append(f"{k}: {a!r} -> {b!r}: NOT applied, the checkpoint's optimizer/scheduler state wins "
                         "(start a new run with model.pretrained=<ckpt> to train with it)")
        else:
            lines.append(f"{k}: {a!r} -> {b!r}: applied")
    if lines:
        log.warning("resuming %s with other settings than it was trained with:\n  %s", path, "\n  ".join(lines))
    return lines
