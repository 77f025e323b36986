"""The checkpoint format of this package, in one place: reading (``weights_only=True``), metadata,
compatibility, quantization-aware checkpoints, and the plain inference network.

A training checkpoint is a Lightning ``.ckpt`` with ``state_dict`` (the network under ``net.``)
and ``checkpoint["mnv2_tasks"]``:

- ``task``, ``version``;
- ``net``: the Hydra node that builds the network (only this package's and torchvision's builders are built);
- ``input``: what inference needs to feed the model as evaluation did: ``image_size`` (int, [H, W],
  or ``None`` = full resolution), ``mean``, ``std``, ``class_names`` and ``category_ids`` (detection:
  the data set's category id of each label 1..K);
- ``quant`` (QAT checkpoints only, mirrored at the top level as ``mnv2_tasks_quant``):
  ``{"mode": "qat", "image_size", "torch", "scheme", "targets"}``; the weights then belong to the captured
  graph (``net.graph.``).

``ModelRecord.read(path)`` reads all of it once, with the defaults of older files filled in
(``OLD_FILE_SCHEME``) and the image size in its one form (``[H, W]`` or ``None``); exported files carry
the same record (``task``, ``net``, ``input``, ``quant``) as JSON in one metadata field, ``MODEL_FIELD``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .models.pretrained import CheckpointError, read_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError", "QUANT_KEY", "ModelRecord", "MODEL_FIELD", "OLD_FILE_SCHEME", "input_spec_of", "model_json", "read_checkpoint", "quant_info_of", "require_float", "net_state",
    "check_compatible", "check_categories", "build_net", "load_model", "load_float_weights",
]

# Network builders a checkpoint may name: this package's and torchvision's (for baselines).
_ALLOWED_TARGET_PREFIXES = ("mnv2_tasks.", "torchvision.models.")
# top-level checkpoint key written by QATCallback (also mirrored as checkpoint["mnv2_tasks"]["quant"])
QUANT_KEY = "mnv2_tasks_quant"
_GRAPH_PREFIX = "net.graph."
# the network settings that must agree between a checkpoint and the configured model
_NET_KEYS = ("_target_", "width_mult", "num_classes", "output_stride", "size", "aspp")
# the int8 scheme of checkpoints and exported files written before they recorded one
OLD_FILE_SCHEME = "u8"
# the metadata field of an exported file that holds its ModelRecord (JSON)
MODEL_FIELD = "mnv2_model"


def input_spec_of(spec: dict | None) -> dict:
    """An input spec with its image size in the one form: ``[H, W]``, or ``None`` (whole images)."""
    from .models.contract import image_hw

    spec = dict(spec or {})
    if spec.get("image_size") is not None:
        spec["image_size"] = list(image_hw(spec["image_size"]))
    return spec


def model_json(task: str | None, net: dict | None, input_spec: dict | None, quant: dict | None = None) -> str:
    """The record an exported file carries in ``MODEL_FIELD``: what it is and how it was fed."""
    return json.dumps({"task": task, "net": net, "input": input_spec_of(input_spec), "quant": quant})


@dataclass(frozen=True)
class ModelRecord:
    """A training checkpoint read once: what it is (``task``, ``net``), how evaluation fed it (``input``),
    how it was quantized (``quant``: ``None`` for a float checkpoint; defaults of older files filled in),
    and the checkpoint dict itself (``checkpoint``: ``state_dict`` and the rest)."""

    path: Path
    task: str | None
    net: dict
    input: dict
    quant: dict | None
    checkpoint: dict = field(repr=False, compare=False)

    @classmethod
    def read(cls, path: str | Path) -> "ModelRecord":
        ckpt = read_checkpoint(path)
        meta = ckpt["mnv2_tasks"]
        quant = quant_info_of(ckpt)
        if quant is not None:
            quant = {"scheme": OLD_FILE_SCHEME, **quant}
            if quant.get("image_size") is not None:
                quant["image_size"] = input_spec_of({"image_size": quant["image_size"]})["image_size"]
        return cls(Path(path), meta.get("task"), dict(meta.get("net") or {}), input_spec_of(meta.get("input")), quant, ckpt)

    @property
    def state_dict(self) -> dict:
        return self.checkpoint["state_dict"]

    def to_json(self) -> str:
        return model_json(self.task, self.net, self.input, self.quant)


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


def quant_info_of(ckpt: dict) -> dict | None:
    """``{"mode": "qat", "image_size": [H, W], ...}`` for a QAT checkpoint dict, ``None`` for a float one."""
    info = ckpt.get(QUANT_KEY) or (ckpt.get("mnv2_tasks") or {}).get("quant")
    if info:
        return dict(info)
    state = ckpt.get("state_dict") or {}
    if any(k.startswith(_GRAPH_PREFIX) or "activation_post_process" in k for k in state):
        return {"mode": "qat"}  # written before the metadata existed, recognised by its keys
    return None


def require_float(path: str | Path, ckpt: dict) -> None:
    """Refuse a QAT checkpoint where float weights are needed; the message says what to do with it instead."""
    info = quant_info_of(ckpt)
    if info:
        task = (ckpt.get("mnv2_tasks") or {}).get("task", "<task>")
        raise CheckpointError(
            f"{path}: a quantization-aware training checkpoint (its weights belong to the QAT graph); "
            f"resume it with `python train.py task={task} quant={info.get('mode', 'qat')} quant.from_ckpt=<its float checkpoint> "
            f"ckpt_path={path}`, or export it with `python tools/export.py {path} --precision int8`"
        )


def net_state(state: dict, prefix: str = "net.") -> dict:
    """The entries of ``state`` under ``prefix``, with the prefix stripped (the network's own state dict)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def check_compatible(ckpt: dict | str | Path, task: str, net_spec: dict | None, quant: str | None = None,
                     path: str | Path | None = None) -> dict:
    """Raise ``CheckpointError`` if the checkpoint (a loaded dict, or a path to read) is of another task,
    network or quantization mode; returns its metadata. ``path`` names a loaded dict's file in messages."""
    if not isinstance(ckpt, dict):
        path, ckpt = ckpt, read_checkpoint(ckpt)
    path = path or "<checkpoint>"
    meta = ckpt["mnv2_tasks"]
    q = quant_info_of(ckpt)
    if q and quant != q.get("mode"):
        require_float(path, ckpt)
    if meta.get("task") != task:
        raise CheckpointError(
            f"{path}: checkpoint of task '{meta.get('task')}', but this run is task '{task}'; "
            f"run with task={meta.get('task')} or pick a {task} checkpoint"
        )
    theirs = meta.get("net") or {}
    for key in _NET_KEYS:
        if net_spec is not None and key in theirs and key in net_spec and theirs[key] != net_spec[key]:
            raise CheckpointError(
                f"{path}: checkpoint has {key}={theirs[key]!r} but the configured model has {key}={net_spec[key]!r}; "
                f"set model.net.{key}={theirs[key]} (or use a matching checkpoint)"
            )
    return meta


def check_categories(input_spec: dict, class_names: Sequence[str] | None, category_ids: Sequence[int] | None,
                     source: str, model: str) -> list[int] | None:
    """Compare a model's recorded classes with the data's; returns the category id of each model label 1..K.

    The same (id, name) pairs pass. The same names under other ids are mapped by name (logged);
    anything else is refused naming both. ``None``: nothing recorded to compare.
    """
    ours_ids, ours_names = input_spec.get("category_ids"), input_spec.get("class_names")
    if ours_ids is None or category_ids is None:
        return None
    ours_ids, theirs_ids = [int(c) for c in ours_ids], [int(c) for c in category_ids]
    theirs_names = list(class_names or [])
    if ours_ids == theirs_ids and (not ours_names or not theirs_names or list(ours_names) == theirs_names):
        return theirs_ids
    if ours_names and sorted(ours_names) == sorted(theirs_names) and len(set(theirs_names)) == len(theirs_names):
        by_name = dict(zip(theirs_names, theirs_ids))
        mapped = [by_name[n] for n in ours_names]
        log.warning("%s: category ids differ from the model's (%s vs %s); mapping the model's labels by name: %s",
                    source, theirs_ids, ours_ids, dict(zip(ours_names, mapped)))
        return mapped
    raise CheckpointError(
        f"{source}: the data's categories {list(zip(theirs_ids, theirs_names))} are not the model's "
        f"{list(zip(ours_ids, ours_names or []))} ({model}); evaluate on the data the model was trained for, "
        "or give the annotation file the model's category ids and names"
    )


def build_net(spec: dict) -> nn.Module:
    """Instantiate a network from its Hydra node, allowing only this package's and torchvision's builders."""
    from hydra.utils import instantiate

    target = str(spec.get("_target_", ""))
    if not target.startswith(_ALLOWED_TARGET_PREFIXES):
        raise CheckpointError(f"refusing to build '{target}': checkpoints may only name builders under {_ALLOWED_TARGET_PREFIXES}")
    return instantiate(spec, _convert_="all")


def _load_net_state(net: nn.Module, state: dict, path, fix: str) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the {fix}: {str(e)[:400]}") from None


def float_net_from(ckpt: dict, path: str | Path) -> nn.Module:
    """The float network a checkpoint records (``net`` node), with its float weights; QAT checkpoints refused."""
    require_float(path, ckpt)
    meta = ckpt["mnv2_tasks"]
    if not meta.get("net"):
        raise CheckpointError(f"{path}: the checkpoint does not record how its network was built ('mnv2_tasks.net')")
    net = build_net(meta["net"])
    _load_net_state(net, net_state(ckpt["state_dict"]), path, "recorded network")
    return net


def load_model(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The plain inference ``nn.Module`` (eval mode) from a training checkpoint, with no Lightning around it.

    ``net.task`` and ``net.input_spec`` (image size, normalisation, class names, category ids, and
    ``channels_last``: the memory format evaluation ran in, which the network is put in) come along.
    """
    ckpt = read_checkpoint(ckpt_path)
    net = float_net_from(ckpt, ckpt_path)
    net.input_spec = input_spec_of(ckpt["mnv2_tasks"].get("input"))
    if net.input_spec.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    return net.to(map_location).eval()


def load_float_weights(pl_module, path: str | Path) -> None:
    """Load the float weights of a checkpoint of the same task and network into ``pl_module.net`` (QAT / PTQ start)."""
    ckpt = read_checkpoint(path)
    require_float(path, ckpt)
    check_compatible(ckpt, pl_module.task_name, getattr(pl_module, "net_spec", None), path=path)
    _load_net_state(pl_module.net, net_state(ckpt["state_dict"]), path,
                    "configured network; configure model.net as the checkpoint was trained")
