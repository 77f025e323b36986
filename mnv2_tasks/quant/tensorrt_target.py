"""TensorRT's target: an int8 ONNX file with explicit Q/DQ that TensorRT builds an engine from (``.int8.trt.onnx``).

TensorRT takes only symmetric int8 (zero point 0). The file is the ONNX Runtime file of the same ``s8sym`` graph
(``ExportJob.onnx_file``, whose activations ONNX Runtime gets as uint8 with zero point 128) with its activation
Q/DQ pairs re-encoded back to int8 (``int8_activations``: ``q_s8 = q_u8 - 128``, the same grid and so the same
numbers), instead of a second export of the graph; it is checked by ``check_tensorrt_qdq``. Its fp32 input is the
plain ``.fp32.onnx``.
Here (no GPU) it is evaluated in ONNX Runtime, which runs the same Q/DQ arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .targets import TargetError

__all__ = ["write_tensorrt", "check_tensorrt_qdq", "int8_activations"]


def write_tensorrt(job, path: Path) -> Path:
    """The job's int8 graph as TensorRT-ready ONNX at ``path``, checked."""
    model = int8_activations(onnx.load(str(job.onnx_file())))
    entry = model.metadata_props.add()
    entry.key, entry.value = "target", "tensorrt"
    onnx.save_model(model, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))
    check_tensorrt_qdq(path)
    return Path(path)


def int8_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place, and returned) with every uint8 Quantize/DequantizeLinear zero point made int8
    (``zp - 128``) and the tensors between them typed int8: ``q_s8 = q_u8 - 128`` on the same grid, so the file
    computes exactly the same numbers. The inverse of ``pt2e.uint8_activations``, on an exported file."""
    inits = {t.name: t for t in model.graph.initializer}
    shifted: set[str] = set()
    quantized: set[str] = set()  # the outputs of the Q nodes whose zero point was shifted
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None or (zp.name not in shifted and zp.data_type != onnx.TensorProto.UINT8):
            continue
        if zp.name not in shifted:
            value = numpy_helper.to_array(zp).astype(np.int16) - 128
            zp.CopyFrom(numpy_helper.from_array(value.astype(np.int8), zp.name))
            shifted.add(zp.name)
        if node.op_type == "QuantizeLinear":
            quantized.add(node.output[0])
    for info in [*model.graph.value_info, *model.graph.output]:
        if info.name in quantized or info.name in shifted:
            if info.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
                info.type.tensor_type.elem_type = onnx.TensorProto.INT8
    return model


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


