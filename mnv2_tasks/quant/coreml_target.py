"""Core ML (iPhone, iPad, Mac): an ``.mlpackage`` (ML program) of the float network, fp32 or with int8 weights,
through ``coremltools`` (``pip install 'mnv2_tasks[coreml]'``; ExecuTorch's extra installs it too).

The deploy module is traced at batch 1 (phones infer one frame at a time) and converted with ``images`` as its
input and the network's deploy outputs as named outputs; a detector is written NMS-free (``decoded``: boxes and
per-class scores), as for ExecuTorch and NCNN, and the same ``select_detections`` runs after it. ``int8`` here is
Core ML's weight quantization (``linear_quantize_weights``, symmetric per channel): weights stored in int8, computed
in float16/32 by Core ML, not the PT2E activation scheme the other targets share. The file records the package's
metadata (task, output format, input spec) in its ``user_defined_metadata``.

Core ML runs models only on Apple's systems: here (Linux) a written file is validated by loading its spec back
(inputs, outputs, metadata), and ``CoremlModel`` says that prediction needs macOS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from .model_file import ExportedModel

__all__ = ["write_target", "check_spec", "CoremlModel", "runs_here"]

INPUT_NAME = "images"


def runs_here() -> bool:
    """Core ML predicts on macOS only."""
    return sys.platform == "darwin"


def _coremltools():
    try:
        import coremltools as ct
    except ImportError:
        raise ImportError("coremltools is not installed: pip install 'mnv2_tasks[coreml]'") from None
    return ct


def write_target(job, path: Path) -> Path:
    """The Core ML target's ``.mlpackage`` at ``path``: the float network (``job.core``, a PT2E graph, is not used:
    ``int8`` is Core ML's own weight quantization), validated by loading its spec back."""
    import warnings

    ct = _coremltools()
    module, meta = job.nms_free_module(None)
    example = job.example[:1]
    meta["mnv2_output_names"] = json.dumps(list(module.output_names))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracing is deprecated; coremltools reads it best
        traced = torch.jit.trace(module, example)
        model = ct.convert(traced, inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))],
                           outputs=[ct.TensorType(name=n) for n in module.output_names], convert_to="mlprogram",
                           minimum_deployment_target=ct.target.iOS16)
    if job.precision == "int8":
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        model = ct.optimize.coreml.linear_quantize_weights(model, config=config)
    model.short_description = f"mnv2_tasks {meta.get('task', '')} ({job.precision})"
    for k, v in meta.items():
        model.user_defined_metadata[k] = str(v)
    model.save(str(path))
    check_spec(path, list(example.shape), list(module.output_names))
    return Path(path)


def check_spec(path: str | Path, input_shape: list[int], output_names: list[str]) -> dict:
    """Load the file's spec back (no prediction: that needs macOS) and check its input, outputs and metadata."""
    ct = _coremltools()
    spec = ct.utils.load_spec(str(path))
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    meta = dict(spec.description.metadata.userDefined)
    problems = []
    if inputs != {INPUT_NAME: list(input_shape)}:
        problems.append(f"inputs {inputs}, expected {{'{INPUT_NAME}': {list(input_shape)}}}")
    if outputs != list(output_names):
        problems.append(f"outputs {outputs}, expected {list(output_names)}")
    if "task" not in meta:
        problems.append("no task in its metadata")
    if problems:
        raise ValueError(f"{path}: the Core ML file does not read back as written: " + "; ".join(problems))
    return {"inputs": inputs, "outputs": outputs, "metadata": meta}


class CoremlModel(ExportedModel):
    """An ``.mlpackage`` of this package in Core ML (macOS only), callable like the network it was exported from."""

    runtime = "coreml"

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        ct = _coremltools()
        self._locate(path, "Core ML package", "coreml")
        if not runs_here():
            raise RuntimeError(f"{self.path}: Core ML runs models on macOS (and iOS) only, not on {sys.platform}; "
                               "its spec was checked when it was written (coreml_target.check_spec)")
        self.model = ct.models.MLModel(str(self.path))
        self._init_meta(dict(self.model.user_defined_metadata))

    def _run(self, x: np.ndarray) -> list:  # pragma: no cover - macOS only
        outs = [self.model.predict({INPUT_NAME: image[None].astype(np.float32)}) for image in x]
        return [np.concatenate([o[name] for o in outs]) for name in self.output_names]
