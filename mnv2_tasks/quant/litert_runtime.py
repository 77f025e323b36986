"""LiteRT (TensorFlow Lite: Android, Raspberry Pi, Coral, microcontroller-class boards) with XNNPACK: ``.tflite``
files through ``litert-torch``, and ``LiteRtModel`` to run them in ``ai-edge-litert``.

- **fp32**: the float network's deploy module, converted by ``litert_torch.convert``.
- **int8**: the same converted PT2E graph as every other target's int8 file (``s8`` or ``s8sym``: TFLite's int8
  spec, per-channel symmetric weights and int8 activations), with its weights put back as float constants quantized
  in the graph (``pt2e.float_weights``, the form the converter reads), converted in its static Q/DQ mode. The file
  takes an int8 image and, where the graph's last op is quantized, gives int8 outputs: ``LiteRtModel`` quantizes
  the input and dequantizes the outputs with the tensors' own scale and zero point, so callers see float32.
- LiteRT has no NMS op for this graph: a detector is written in its NMS-free output format (``decoded``), and the
  runner runs the same ``select_detections`` on it as every other runtime.
- The file is written for one image (batch 1, as a phone or a drone runs it); ``LiteRtModel`` runs a batch one
  image at a time. The package's record (task, output format, input spec) is in the file itself, as a TFLite
  metadata entry ``mnv2_metadata`` (JSON).

Install: ``pip install 'mnv2_tasks[litert]'`` runs ``.tflite`` files (``ai-edge-litert``). Writing them needs
``litert-torch``, whose declared requirements (transformers, kagglehub, ``ai-edge-litert[model-utils]``, which pins
typing-extensions below 4.13) conflict with this package's; the packages conversion really imports are pinned in
``requirements/litert-convert.txt``: ``pip install --no-deps -r requirements/litert-convert.txt`` (``make setup`` does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .model_file import ExportedModel

__all__ = ["write_target", "write_litert", "LiteRtModel", "read_metadata", "META_NAME"]

META_NAME = "mnv2_metadata"
CONVERT_INSTALL = "pip install --no-deps -r requirements/litert-convert.txt"


def _interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("LiteRT is not installed: pip install 'mnv2_tasks[litert]' (or pip install ai-edge-litert)") from None
    return Interpreter


def _converter():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
    except ImportError as e:
        raise ImportError(f"writing .tflite files needs litert-torch ({e}); install it with `{CONVERT_INSTALL}` from "
                          "this package's checkout (its own requirements conflict with ours, see litert_runtime.py)") from None
    litert_torch.config.show_progress = False
    return litert_torch, pt2e_quantizer, QuantConfig


def write_target(job, path: Path) -> Path:
    """The LiteRT target's file: the job's core (float, or its int8 graph) in its NMS-free output format at ``path``."""
    from .pt2e import float_weights

    module, meta = job.nms_free_module(float_weights(job.core) if job.core is not None else None)
    return write_litert(module, job.example[:1], path, module.output_names, meta, quantized=job.core is not None)


def write_litert(module: torch.nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str],
                 metadata: dict[str, str], quantized: bool) -> Path:
    """Convert ``module`` (images -> tuple of tensors) at ``example``'s shape to a ``.tflite`` at ``path``;
    ``quantized``: the module holds a converted PT2E graph (static Q/DQ), written as an int8 model."""
    litert_torch, pt2e_quantizer, QuantConfig = _converter()
    kwargs = {}
    if quantized:  # the quantizer only tells the converter that the graph's Q/DQ pairs are static int8
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with torch.no_grad():
        edge = litert_torch.convert(module.eval(), (example,), **kwargs)
    meta = {**{k: str(v) for k, v in metadata.items()}, "mnv2_output_names": json.dumps(list(output_names))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_with_metadata(edge.model_content(), meta))
    return path


def _with_metadata(flatbuffer: bytes, meta: dict[str, str]) -> bytes:
    """``flatbuffer`` with ``meta`` (JSON) as the TFLite metadata entry ``META_NAME``."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``mnv2_metadata`` entry of a ``.tflite`` file (``{}`` where it has none)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == META_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return {}


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] not in (np.int8, np.uint8):
        return x.astype(details["dtype"], copy=False)
    scale, zero_point = details["quantization"]
    info = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])


def _dequantize(y: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] not in (np.int8, np.uint8):
        return y
    scale, zero_point = details["quantization"]
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


class LiteRtModel(ExportedModel):
    """A ``.tflite`` file of this package in LiteRT (XNNPACK), callable like the network it was exported from."""

    runtime = "litert"

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        Interpreter = _interpreter()
        self._locate(path, "LiteRT file", "litert")
        with self._loading("LiteRT", "litert"):
            meta = read_metadata(self.path)
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=int(threads))
            self.interpreter.allocate_tensors()
            self.runner = self.interpreter.get_signature_runner()
        self._init_meta(meta)
        (self._input, self._in_details), = self.runner.get_input_details().items()
        outs = self.runner.get_output_details()
        self._outputs = sorted(outs, key=lambda k: int(k.rsplit("_", 1)[-1]))  # output_0, output_1, ... in order
        self._out_details = [outs[k] for k in self._outputs]

    @property
    def input_dtype(self) -> str:
        return np.dtype(self._in_details["dtype"]).name

    def _run(self, x: np.ndarray) -> list:
        per_image = []
        for image in x:  # the file is written for batch 1
            got = self.runner(**{self._input: _quantize(image[None], self._in_details)})
            per_image.append([_dequantize(got[k], d) for k, d in zip(self._outputs, self._out_details)])
        return [np.concatenate([p[i] for p in per_image]) for i in range(len(self._outputs))]
