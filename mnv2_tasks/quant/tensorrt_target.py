"""TensorRT's target: an int8 ONNX file with explicit Q/DQ that TensorRT builds an engine from (``.int8.trt.onnx``).

TensorRT takes only symmetric int8 (zero point 0), so the file is written from the ``s8sym`` graph as is
(no uint8 re-encoding) and checked by ``check_tensorrt_qdq``. Its fp32 input is the plain ``.fp32.onnx``.
Here (no GPU) it is evaluated in ONNX Runtime, which runs the same Q/DQ arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .deploy import export_deploy
from .targets import TargetError

__all__ = ["write_tensorrt", "check_tensorrt_qdq"]


def write_tensorrt(job, path: Path) -> Path:
    """The job's int8 graph as TensorRT-ready ONNX at ``path``, checked."""
    export_deploy(job.core, job.net, job.example, path, fmt=job.fmt, metadata={**job.metadata, "target": "tensorrt"},
                  opset=job.opset)
    check_tensorrt_qdq(path)
    return Path(path)


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


