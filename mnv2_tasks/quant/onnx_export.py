"""ONNX export (``torch.onnx.export(..., dynamo=True)``, opset 20, dynamic batch) of float and quantized graphs.

A converted PT2E graph exports as QuantizeLinear / DequantizeLinear pairs around float ops
(the QDQ format); ONNX Runtime fuses them into integer kernels when it loads the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import onnx
import torch
from torch import nn
from torch.export import Dim

from ..models import detection_postprocess  # noqa: F401  (registers torch.ops.mnv2_tasks.grouped_nms)
from ..models.contract import pad_batch
from .pt2e import MAX_BATCH

log = logging.getLogger(__name__)

__all__ = ["OPSET", "export_onnx", "OnnxFileError", "check_onnx_file", "onnx_metadata"]

OPSET = 20
INPUT_NAME = "images"


def _grouped_nms_onnx(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
    """``grouped_nms`` as the ONNX node whose semantics it has: NMS per (image, class) in the runtime's own kernel."""
    from onnxscript import opset20 as op

    return op.NonMaxSuppression(boxes, scores, op.Constant(value_ints=[max_per_class]),
                                op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]))


# this package's custom ops -> their ONNX translation
TRANSLATIONS = {torch.ops.mnv2_tasks.grouped_nms.default: _grouped_nms_onnx}


class OnnxFileError(ValueError):
    """A file that is not a loadable ONNX model of this package; the message names the file and the fix."""


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    output_names: Sequence[str],
    metadata: dict[str, str] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``module`` (float ``nn.Module`` or converted graph) to ``path`` with a dynamic batch dimension.

    ``example`` fixes the channel and spatial sizes; ``metadata`` goes into the model's
    ``metadata_props`` (task, class names, image size, precision...). Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = pad_batch(example)  # a batch of 1 would be specialised away
    batch = Dim("batch", min=1, max=MAX_BATCH)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per deduplicated initializer otherwise
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
            custom_translation_table=TRANSLATIONS,
        )
    model = program.model_proto
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(k), str(v)
    # one self-contained file (the models are a few MB; no external data)
    onnx.save_model(model, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))
    log.info("exported %s (opset %d, %.2f MB)", path, opset, path.stat().st_size / 2**20)
    return path


def check_onnx_file(path: str | Path) -> onnx.ModelProto:
    """Load ``path`` as an ONNX model or raise ``OnnxFileError`` naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"{path}: ONNX file not found; export one with `python tools/export.py <checkpoint>`")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise OnnxFileError(
            f"{path}: not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            "pass a .onnx file written by tools/export.py or by a quant=qat / quant=ptq run"
        ) from None
    if not model.graph.input or not model.graph.output:
        raise OnnxFileError(f"{path}: ONNX model without inputs or outputs; re-export it with tools/export.py")
    return model


def onnx_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
