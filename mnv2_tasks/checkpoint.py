"""Training checkpoints -> plain inference networks, read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .models.pretrained import CheckpointError, read_state_dict

__all__ = ["load_model", "read_checkpoint", "check_compatible", "build_net"]

# Network builders a checkpoint may name: this package's and torchvision's (for baselines).
_ALLOWED_TARGET_PREFIXES = ("mnv2_tasks.", "torchvision.models.")


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by ``train(cfg)``: ``state_dict`` plus ``mnv2_tasks`` metadata."""
    ckpt = read_state_dict(path)
    meta = ckpt.get("mnv2_tasks")
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: not a training checkpoint of this package (no 'mnv2_tasks' metadata). For torchvision/timm "
            "weight files, build the model and use mnv2_tasks.models.load_pretrained instead."
        )
    return ckpt


def build_net(spec: dict) -> nn.Module:
    """Instantiate a network from its Hydra node, allowing only this package's and torchvision's builders."""
    from hydra.utils import instantiate

    target = str(spec.get("_target_", ""))
    if not target.startswith(_ALLOWED_TARGET_PREFIXES):
        raise CheckpointError(f"refusing to build '{target}': checkpoints may only name builders under {_ALLOWED_TARGET_PREFIXES}")
    return instantiate(spec, _convert_="all")


def check_compatible(path: str | Path, task: str, net_spec: dict | None, quant: str | None = None) -> dict:
    """Raise ``CheckpointError`` if the checkpoint at ``path`` is of another task, network or quantization mode."""
    from .quant.checkpoints import quant_info_of

    ckpt = read_checkpoint(path)
    meta = ckpt["mnv2_tasks"]
    q = quant_info_of(ckpt)
    if q and quant != q.get("mode"):
        raise CheckpointError(
            f"{path}: a quantization-aware training checkpoint; resume it with quant={q.get('mode')} "
            f"(python train.py task={meta.get('task')} quant={q.get('mode')} quant.from_ckpt=<its float checkpoint> ckpt_path={path}), "
            f"or export it with python tools/export.py {path}"
        )
    if meta.get("task") != task:
        raise CheckpointError(
            f"{path}: checkpoint of task '{meta.get('task')}', but this run is task '{task}'; "
            f"run with task={meta.get('task')} or pick a {task} checkpoint"
        )
    theirs = meta.get("net") or {}
    for key in ("_target_", "width_mult", "num_classes", "output_stride", "size", "aspp"):
        if net_spec is not None and key in theirs and key in net_spec and theirs[key] != net_spec[key]:
            raise CheckpointError(
                f"{path}: checkpoint has {key}={theirs[key]!r} but the configured model has {key}={net_spec[key]!r}; "
                f"set model.net.{key}={theirs[key]} (or use a matching checkpoint)"
            )
    return meta


def load_model(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The plain inference ``nn.Module`` (eval mode) from a training checkpoint, with no Lightning around it."""
    ckpt = read_checkpoint(ckpt_path)
    meta = ckpt["mnv2_tasks"]
    from .quant.checkpoints import quant_info_of

    if quant_info_of(ckpt):
        raise CheckpointError(
            f"{ckpt_path}: a quantization-aware training checkpoint; load it with the quant tools "
            "(tools/export.py, or train.py ... quant=qat ckpt_path=...), not load_model"
        )
    if not meta.get("net"):
        raise CheckpointError(f"{ckpt_path}: the checkpoint does not record how its network was built ('mnv2_tasks.net')")
    net = build_net(meta["net"])
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path}: weights do not fit the recorded network: {str(e)[:500]}") from None
    net.task = meta["task"]  # lets tools dispatch on the task
    net.input_spec = meta.get("input") or {}  # image_size, class_names
    return net.to(map_location).eval()
