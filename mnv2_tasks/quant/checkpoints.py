"""Recognising quantization checkpoints, and loading float weights into a task module for QAT / PTQ."""

from __future__ import annotations

from pathlib import Path

from ..models.pretrained import CheckpointError

__all__ = ["QUANT_KEY", "quant_info", "quant_info_of", "load_float_weights", "require_float_checkpoint"]

# top-level checkpoint key written by QATCallback (also mirrored as checkpoint["mnv2_tasks"]["quant"])
QUANT_KEY = "mnv2_tasks_quant"
_GRAPH_PREFIX = "net.graph."


def quant_info_of(ckpt: dict) -> dict | None:
    """``{"mode": "qat", "image_size": [H, W], ...}`` for a QAT checkpoint dict, ``None`` for a float one."""
    info = ckpt.get(QUANT_KEY) or (ckpt.get("mnv2_tasks") or {}).get("quant")
    if info:
        return dict(info)
    state = ckpt.get("state_dict") or {}
    if any(k.startswith(_GRAPH_PREFIX) or "activation_post_process" in k for k in state):
        return {"mode": "qat"}  # written before the metadata existed, recognised by its keys
    return None


def quant_info(path: str | Path) -> dict | None:
    from ..checkpoint import read_checkpoint

    return quant_info_of(read_checkpoint(path))


def require_float_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Raise ``CheckpointError`` if ``ckpt`` (read from ``path``) is a QAT checkpoint."""
    if quant_info_of(ckpt):
        raise CheckpointError(
            f"{path}: a quantization-aware training checkpoint (its weights belong to the QAT graph); "
            "resume it with `python train.py ... quant=qat ckpt_path=<it>`, or export it with "
            "`python tools/export.py <it> --precision int8`"
        )


def load_float_weights(pl_module, path: str | Path) -> None:
    """Load the ``net.`` weights of a float checkpoint of the same task and network into ``pl_module.net``."""
    from ..checkpoint import check_compatible, read_checkpoint

    ckpt = read_checkpoint(path)
    require_float_checkpoint(path, ckpt)
    check_compatible(path, pl_module.task_name, getattr(pl_module, "net_spec", None))
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        pl_module.net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit the configured network ({str(e)[:300]}); configure model.net as the checkpoint was trained"
        ) from None
