"""Deployment targets: which int8 scheme each runtime takes, what file each gets, and writing them.

=============  ==========================  =================================  ==================
target         runtime                     files (``<stem>.<precision>...``)  int8 schemes
=============  ==========================  =================================  ==================
``onnx``       ONNX Runtime                ``.fp32.onnx``, ``.int8.onnx``      u8, s8, s8sym
``openvino``   OpenVINO (IR)               ``.fp32.xml``, ``.int8.xml`` (+bin) u8, s8, s8sym
``executorch`` ExecuTorch, XNNPACK         ``.fp32.pte``, ``.int8.pte``        s8, s8sym
``tensorrt``   TensorRT (explicit Q/DQ)    ``.int8.trt.onnx``                  s8sym
=============  ==========================  =================================  ==================

One QAT or PTQ run quantizes once, in the one scheme every requested target takes
(``scheme_for``: the first of u8, s8, s8sym that all accept), and writes every target's files
from that one converted graph. The ONNX Runtime and OpenVINO files get its activations re-encoded
as uint8 (``pt2e.uint8_activations``: zero point + 128, the same grid, the same numbers), which
ORT's x86 kernels run several times faster than int8 activations. TensorRT's fp32 input is the plain ``.fp32.onnx``; its int8
file is checked to have only int8 Q/DQ with zero point 0 (``check_tensorrt_qdq``) and is
evaluated in ONNX Runtime here (no GPU), which runs the same Q/DQ arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .deploy import DeployModule, export_deploy, file_metadata
from .onnx_export import OPSET
from .pt2e import uint8_activations
from .quantizer import SCHEMES, check_scheme

__all__ = ["TARGETS", "check_targets", "scheme_for", "target_file", "write_targets", "check_tensorrt_qdq", "TargetError"]

TARGETS: dict[str, dict] = {
    "onnx": {"schemes": ("u8", "s8", "s8sym"), "suffix": ".onnx", "precisions": ("fp32", "int8")},
    "openvino": {"schemes": ("u8", "s8", "s8sym"), "suffix": ".xml", "precisions": ("fp32", "int8")},
    "executorch": {"schemes": ("s8", "s8sym"), "suffix": ".pte", "precisions": ("fp32", "int8")},
    "tensorrt": {"schemes": ("s8sym",), "suffix": ".trt.onnx", "precisions": ("int8",)},
}


class TargetError(ValueError):
    """A target list or scheme that cannot work; the message says what to change."""


def check_targets(targets: str | Iterable[str]) -> list[str]:
    """``targets`` (a list, or a comma-separated string; ``all``) as a list of known targets, in ``TARGETS`` order."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = list(targets)
    if "all" in targets:
        return list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise TargetError(f"unknown deployment target(s) {unknown or targets}; choose from {list(TARGETS)} or 'all' "
                          "(quant.targets=[onnx,openvino,executorch,tensorrt], tools/export.py --format)")
    return [t for t in TARGETS if t in targets]


def scheme_for(targets: Sequence[str], scheme: str = "auto") -> str:
    """The int8 scheme for ``targets``: ``scheme`` if every target takes it, else an error; ``auto``: the first that all take."""
    targets = check_targets(targets)
    if scheme != "auto":
        check_scheme(scheme)
        refusing = [t for t in targets if scheme not in TARGETS[t]["schemes"]]
        if refusing:
            raise TargetError(f"quantization scheme {scheme!r} does not run on {refusing} (they take "
                              f"{ {t: TARGETS[t]['schemes'] for t in refusing} }); use quant.scheme=auto")
        return scheme
    for s in SCHEMES:
        if all(s in TARGETS[t]["schemes"] for t in targets):
            return s
    raise TargetError(f"no one int8 scheme serves {targets}")  # unreachable while s8sym serves all


def target_file(stem: str, target: str, precision: str) -> str | None:
    """File name of ``target`` at ``precision`` (``None``: the target has no file of that precision)."""
    spec = TARGETS[target]
    if precision not in spec["precisions"]:
        return None
    return f"{stem}.{precision}{spec['suffix']}"


def write_targets(
    targets: Sequence[str],
    core: nn.Module | None,
    net: nn.Module,
    example: torch.Tensor,
    out_dir: str | Path,
    precision: str,
    metadata: dict | None = None,
    stem: str = "model",
    fmt: str | None = None,
    opset: int = OPSET,
) -> dict[str, Path]:
    """Write ``precision``'s file of every target in ``targets`` from one deploy core; ``{target: path}``.

    ``core``: the converted int8 graph (``None``: the float network). ``fmt``: the output format
    (the network's default if ``None``; ExecuTorch takes its NMS-free variant).
    """
    out_dir = Path(out_dir)
    meta = {**(metadata or {}), "precision": precision}
    paths: dict[str, Path] = {}
    onnx_path = out_dir / f"{stem}.{precision}.onnx"
    if {"onnx", "openvino"} & set(targets):
        u8 = uint8_activations(core) if core is not None else None
        export_deploy(u8, net, example, onnx_path, fmt=fmt, metadata=meta, opset=opset)
        if "onnx" in targets:
            paths["onnx"] = onnx_path
    if "openvino" in targets:
        from .openvino_runtime import write_openvino

        paths["openvino"] = write_openvino(onnx_path, out_dir / target_file(stem, "openvino", precision))
    if "executorch" in targets:
        from .executorch_runtime import executorch_format, write_executorch

        module = DeployModule(core, net, executorch_format(net, fmt)).eval()
        et_meta = {**file_metadata(net, module.fmt, example, opset), **{k: str(v) for k, v in meta.items()}}
        paths["executorch"] = write_executorch(module, example, out_dir / target_file(stem, "executorch", precision),
                                               module.output_names, et_meta)
    if "tensorrt" in targets and target_file(stem, "tensorrt", precision):
        trt = out_dir / target_file(stem, "tensorrt", precision)
        export_deploy(core, net, example, trt, fmt=fmt, metadata={**meta, "target": "tensorrt"}, opset=opset)
        check_tensorrt_qdq(trt)
        paths["tensorrt"] = trt
    return paths


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def check_tensorrt_qdq(path: str | Path) -> dict:
    """Raise ``TargetError`` unless every Quantize/DequantizeLinear of ``path`` is int8 with zero point 0
    (TensorRT's explicit quantization); returns counts ``{"quantize": n, "dequantize": m}``."""
    model = onnx.load(str(path), load_external_data=False)
    consts = _constants(model)
    counts = {"quantize": 0, "dequantize": 0}
    bad = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None and node.op_type == "DequantizeLinear" and node.input[0] in consts:
            zp = None  # a constant int8 weight with no zero point input: zero point 0 by the spec
            if consts[node.input[0]].dtype != np.int8:
                bad.append(f"{node.name}: weight of type {consts[node.input[0]].dtype}")
            continue
        if zp is None:
            bad.append(f"{node.name}: no int8 zero point (ONNX then uses uint8)")
        elif zp.dtype != np.int8 or np.any(zp != 0):
            bad.append(f"{node.name}: zero point {zp.dtype} {np.unique(zp)[:4].tolist()}")
    if bad:
        raise TargetError(f"{path}: not TensorRT-ready int8 ({len(bad)} Q/DQ nodes): {bad[:5]}; "
                          "quantize with quant.scheme=s8sym (quant.targets=[tensorrt] chooses it)")
    if counts["quantize"] == 0:
        raise TargetError(f"{path}: no QuantizeLinear node; it is not an int8 model")
    return counts


def targets_metadata(targets: Sequence[str], scheme: str) -> dict[str, str]:
    return {"quant_scheme": scheme, "quant_targets": json.dumps(list(targets))}
