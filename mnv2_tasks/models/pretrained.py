"""Load MobileNetV2 weights from a local file: torchvision's, timm's, Keras's ``.h5`` (``keras_weights.py``) or this
package's.

Files are read with ``torch.load(weights_only=True)`` or safetensors, never unpickled.
Names are translated onto this package's (see ``mobilenetv2.py``) by explicit rules, so a
tensor either lands in its counterpart or is reported.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import CheckpointError
from .mobilenetv2 import INVERTED_RESIDUAL_SETTING

log = logging.getLogger(__name__)

__all__ = ["load_pretrained", "read_state_dict", "width_of", "LoadReport", "CheckpointError"]


@dataclass
class LoadReport:
    source_format: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    missing: list[str] = field(default_factory=list)  # target keys left as initialised

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors ({self.source_format} format)"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}: " + ", ".join(f"{k} ({r})" for k, r in self.skipped.items()))
        if self.missing:
            lines.append(f"not in the file, left as initialised: {', '.join(self.missing)}")
        return "; ".join(lines)


def read_state_dict(path: str | Path) -> dict:
    """Read a ``.pth``/``.pt``/``.ckpt`` (weights only) or ``.safetensors`` file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; pass the path of a .pth, .ckpt or .safetensors file")
    from .keras_weights import is_keras_h5, read_keras_h5

    if is_keras_h5(path):  # Keras's ImageNet weights: read into this package's names
        return read_keras_h5(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(
            f"{path}: not a loadable weights file ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Expected a state dict saved with torch.save, a Lightning .ckpt of this package, or .safetensors; "
            "files that need arbitrary unpickling are refused."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def width_of(state: dict, path: str | Path = "") -> float:
    """The width multiplier of a MobileNetV2 weights file, read from its tensors: the 1x1 head convolution
    (the 1x1 weight with the most output channels: 1280 or more, above any expansion's 960 x width) reads the
    last block's 320 x width channels, in torchvision's, timm's and this package's files alike."""
    if isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = state["state_dict"]
    pointwise = [t for t in state.values() if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-2:] == (1, 1)]
    if not pointwise:
        raise CheckpointError(f"{path}: no 1x1 convolution weights; not a MobileNetV2 weights file")
    head = max(pointwise, key=lambda t: t.shape[0])
    last = INVERTED_RESIDUAL_SETTING[-1][1]  # 320 channels at width 1
    return round(head.shape[1] / last, 4)


def _flat_block_index() -> list[tuple[int, int]]:
    """(stage, index within stage) for every flat block, as timm numbers them."""
    return [(s, j) for s, (_, _, n, _) in enumerate(INVERTED_RESIDUAL_SETTING) for j in range(n)]


_N_BLOCKS = sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)


def _from_torchvision(key: str) -> str | None:
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if m is None:
        m = re.fullmatch(r"classifier\.1\.(weight|bias)", key)
        return f"classifier.{m.group(1)}" if m else None
    i, rest = int(m.group(1)), m.group(2)
    if i == 0:
        return {"0": "stem.conv", "1": "stem.bn"}.get(rest.split(".")[0], "?") + rest[1:]
    if i == _N_BLOCKS + 1:
        return {"0": "head.conv", "1": "head.bn"}.get(rest.split(".")[0], "?") + rest[1:]
    b = i - 1
    if b == 0:  # t=1 block: dw, bn, pwl, bn
        table = {"conv.0.0": "conv_dw", "conv.0.1": "bn2", "conv.1": "conv_pwl", "conv.2": "bn3"}
    else:
        table = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2", "conv.2": "conv_pwl", "conv.3": "bn3"}
    for src, dst in table.items():
        if rest.startswith(src + "."):
            return f"blocks.{b}.{dst}{rest[len(src):]}"
    return None


def _from_timm(key: str) -> str | None:
    simple = {"conv_stem.": "stem.conv.", "bn1.": "stem.bn.", "conv_head.": "head.conv.", "bn2.": "head.bn.", "classifier.": "classifier."}
    for src, dst in simple.items():
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)", key)
    if m is None:
        return None
    stage, j, part, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    try:
        b = _flat_block_index().index((stage, j))
    except ValueError:
        return None
    if b == 0:  # timm's DepthwiseSeparableConv: conv_dw, bn1, conv_pw, bn2
        part = {"conv_dw": "conv_dw", "bn1": "bn2", "conv_pw": "conv_pwl", "bn2": "bn3"}.get(part)
        if part is None:
            return None
    return f"blocks.{b}.{part}.{rest}"


# marker key (without prefix) -> (format name, translation)
_FORMATS: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "stem.conv.weight": ("mnv2_tasks", lambda k: k),
    "features.0.0.weight": ("torchvision", _from_torchvision),
    "conv_stem.weight": ("timm", _from_timm),
}


def _detect(state: dict, path: Path) -> tuple[str, str, Callable[[str], str | None]]:
    """Find the format and the key prefix (``net.``, ``module.``, ``net.backbone.``, ...)."""
    for marker, (name, fn) in _FORMATS.items():
        hits = [k for k in state if k == marker or k.endswith("." + marker)]
        if hits:
            prefix = min(hits, key=len)[: -len(marker)]
            return name, prefix, fn
    sample = ", ".join(list(state)[:5])
    raise CheckpointError(
        f"{path}: no MobileNetV2 weights recognised (first keys: {sample}). Expected torchvision's "
        "mobilenet_v2 (features.0.0.weight), timm's mobilenetv2_* (conv_stem.weight) or this package's (stem.conv.weight)."
    )


def load_pretrained(module: nn.Module, path: str | Path, strict_shapes: bool = True) -> LoadReport:
    """Load MobileNetV2 weights from ``path`` into ``module`` (a ``MobileNetV2`` or ``MobileNetV2Backbone``).

    Source tensors the module has no place for (a classifier on a backbone) and classifier
    tensors of another ``num_classes`` are skipped and reported; any other shape mismatch
    is a ``CheckpointError`` naming the tensor. Returns what was loaded, skipped and missing.
    """
    path = Path(path)
    state = read_state_dict(path)
    if isinstance(state.get("state_dict"), dict):  # Lightning checkpoint
        state = state["state_dict"]
    fmt, prefix, translate = _detect(state, path)
    from .keras_weights import is_keras_h5

    if is_keras_h5(path):
        fmt = "keras"
        padding = {getattr(m, "padding", None) for m in module.modules() if hasattr(m, "taps")} - {None}
        if padding and padding != {"tf_same"}:
            log.warning("%s: Keras weights on a network with %s padding: its outputs will differ from Keras's (about 1 "
                        "in the logits); build it with padding=tf_same (model.net.padding=tf_same)", path, padding.pop())
    target = module.state_dict()
    report = LoadReport(source_format=fmt)
    new_state: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or not isinstance(value, torch.Tensor):
            continue
        src = key[len(prefix):]
        dst = translate(src)
        if dst is None:
            report.skipped[key] = "not part of MobileNetV2"
        elif dst not in target:
            report.skipped[key] = "no such layer in the target model"
        elif target[dst].shape != value.shape:
            if dst.startswith("classifier."):
                report.skipped[key] = f"classifier shape {tuple(value.shape)} != {tuple(target[dst].shape)} (other num_classes)"
                continue
            raise CheckpointError(
                f"{path}: tensor '{key}' has shape {tuple(value.shape)} but '{dst}' in the model has "
                f"{tuple(target[dst].shape)}: the file is for another width multiplier or architecture; "
                f"build the model with the width the file was trained with."
            )
        else:
            new_state[dst] = value
            report.loaded.append(dst)
    report.missing = [k for k in target if k not in new_state and not k.endswith("num_batches_tracked")]
    if fmt == "keras":
        from .keras_weights import fold_keras_eps

        fold_keras_eps(module, new_state)
    if not report.loaded:
        raise CheckpointError(f"{path}: no tensor matched the model ({fmt} format, prefix '{prefix}')")
    module.load_state_dict(new_state, strict=False)
    log.info("load_pretrained(%s): %s", path, report)
    return report
