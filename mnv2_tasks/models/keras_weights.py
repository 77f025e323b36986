"""Keras's ImageNet MobileNetV2 weights, read into this package's names without TensorFlow or Keras.

Keras publishes ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<res>[_no_top].h5`` for alpha 0.35, 0.5,
0.75, 1.0, 1.3, 1.4 and resolutions 96, 128, 160, 192, 224: HDF5 files with one group per layer (``Conv1``,
``bn_Conv1``, ``expanded_conv_depthwise``, ``block_<i>_expand`` ... ``Conv_1``, ``predictions``), read here with
``h5py`` (``pip install 'mnv2_tasks[keras]'``). What differs from PyTorch's conventions, and how it is undone:

- kernels are ``(kh, kw, in, out)`` (depthwise ``(kh, kw, in, 1)``, dense ``(in, out)``): transposed;
- BatchNorm's epsilon is 1e-3 (PyTorch's 1e-5): ``load_pretrained`` adds the difference to the running variance
  (``fold_keras_eps``), which gives the same normalisation in evaluation;
- strided convolutions pad as TensorFlow's ``same`` (the extra pixel after): the network must be built with
  ``padding="tf_same"`` (``mobilenetv2.SamePad``); with PyTorch's symmetric padding the logits are off by about 1;
- inputs are scaled to [-1, 1] (``x / 127.5 - 1``): mean = std = 0.5 (``KERAS_MEAN``, ``KERAS_STD``).

``tests/test_keras_weights.py`` holds the logits to Keras's own (Keras 3 on the torch backend) at two widths and two
resolutions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ["is_keras_h5", "read_keras_h5", "keras_resolution", "fold_keras_eps", "KERAS_MEAN", "KERAS_STD", "KERAS_BN_EPS"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_BN_EPS = 1e-3
KERAS_MEAN = (0.5, 0.5, 0.5)
KERAS_STD = (0.5, 0.5, 0.5)

_FIXED = {"Conv1": "stem.conv", "bn_Conv1": "stem.bn", "Conv_1": "head.conv", "Conv_1_bn": "head.bn",
          "predictions": "classifier", "expanded_conv_depthwise": "blocks.0.conv_dw",
          "expanded_conv_depthwise_BN": "blocks.0.bn2", "expanded_conv_project": "blocks.0.conv_pwl",
          "expanded_conv_project_BN": "blocks.0.bn3"}
_BLOCK = re.compile(r"^block_(\d+)_(expand|depthwise|project)(_BN)?$")
_PARTS = {("expand", False): "conv_pw", ("depthwise", False): "conv_dw", ("project", False): "conv_pwl",
          ("expand", True): "bn1", ("depthwise", True): "bn2", ("project", True): "bn3"}
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def is_keras_h5(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file (Keras's ``.h5`` weights)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def keras_resolution(path: str | Path) -> int | None:
    """The input resolution a published Keras file was trained at, read from its name (``..._<alpha>_<res>.h5``)."""
    m = re.search(r"_(\d+(?:\.\d+)?)_(\d{2,3})(?:_no_top)?\.h5$", Path(path).name)
    return int(m.group(2)) if m else None


def _our_layer(name: str) -> str | None:
    if name in _FIXED:
        return _FIXED[name]
    m = _BLOCK.match(name)
    return f"blocks.{int(m.group(1))}.{_PARTS[(m.group(2), bool(m.group(3)))]}" if m else None


def _tensor(layer: str, weight: str, value: np.ndarray) -> tuple[str, torch.Tensor] | None:
    """One Keras weight as (our key, tensor), or None for a weight this network has no place for."""
    value = np.asarray(value, dtype=np.float32)
    if weight in _BN:  # moving_variance as Keras keeps it: load_pretrained adds 1e-3 - the target BatchNorm's eps
        return f"{layer}.{_BN[weight]}", torch.from_numpy(value.copy())
    if weight == "depthwise_kernel" or (weight == "kernel" and layer.endswith("conv_dw")):  # (kh, kw, in, 1) -> (in, 1, kh, kw)
        # (Keras 2's files name it depthwise_kernel, Keras 3 kernel)
        return f"{layer}.weight", torch.from_numpy(value.transpose(2, 3, 0, 1).copy())
    if weight == "kernel":
        t = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T  # conv (kh, kw, in, out) / dense (in, out)
        return f"{layer}.weight", torch.from_numpy(np.ascontiguousarray(t))
    if weight == "bias":
        return f"{layer}.bias", torch.from_numpy(value.copy())
    return None


def read_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """A Keras MobileNetV2 ``.h5`` (weights only, or a whole saved model) as a state dict in this package's names."""
    try:
        import h5py
    except ImportError:
        raise CheckpointError(f"{path}: a Keras .h5 file; reading it needs h5py: pip install 'mnv2_tasks[keras]'") from None
    state: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f  # a whole saved model keeps its weights there
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", list(root.keys()))]
        for name in names:
            group = root[name]
            weights = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
            if not weights:
                continue
            layer = _our_layer(name)
            if layer is None:
                unknown.append(name)
                continue
            for w in weights:
                short = w.split("/")[-1].split(":")[0]
                item = _tensor(layer, short, group[w][()])
                if item is not None:
                    state[item[0]] = item[1]
    if not state:
        raise CheckpointError(f"{path}: an HDF5 file with no Keras MobileNetV2 layer (Conv1, block_<i>_*, Conv_1); "
                              f"layers found: {names[:8]}")
    if unknown:
        raise CheckpointError(f"{path}: layers {unknown[:5]} are not Keras MobileNetV2's; is this another Keras model?")
    return state


def fold_keras_eps(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Keras's BatchNorm divides by sqrt(var + 1e-3): add ``1e-3 - eps`` of each target BatchNorm to its running
    variance in ``state`` (our keys), so that the module normalises as Keras did."""
    for key in [k for k in state if k.endswith(".running_var")]:
        bn = module.get_submodule(key[: -len(".running_var")])
        state[key] = state[key] + (KERAS_BN_EPS - float(bn.eps))
