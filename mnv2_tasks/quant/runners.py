"""``open_model(path)``: an exported file in the runtime its suffix names (``.onnx``, ``.xml``, ``.pte``)."""

from __future__ import annotations

from pathlib import Path

from .model_file import MODEL_FILE_SUFFIXES, ExportedModel

__all__ = ["open_model", "runtime_of"]


def runtime_of(path: str | Path) -> str:
    """The runtime that runs ``path``, by its suffix; an unknown suffix is an error naming the choices."""
    suffix = Path(path).suffix
    if suffix not in MODEL_FILE_SUFFIXES:
        raise ValueError(f"{path}: not an exported model file; pass one of {', '.join(MODEL_FILE_SUFFIXES)} "
                         "(written by tools/export.py or a quant=qat / quant=ptq run)")
    return MODEL_FILE_SUFFIXES[suffix]


def open_model(path: str | Path, threads: int = 2, task: str | None = None) -> ExportedModel:
    """The exported file ``path`` in its runtime (by suffix), refusing one exported for another ``task``."""
    runtime = runtime_of(path)
    if runtime == "onnxruntime":
        from .ort_runner import OrtModel as cls
    elif runtime == "openvino":
        from .openvino_runtime import OvModel as cls
    else:
        from .executorch_runtime import EtModel as cls
    model = cls(path, threads)
    if task is not None and model.task and model.task != task:
        raise ValueError(f"{path}: a model of task '{model.task}', but the run is task '{task}'; run with task={model.task}")
    return model
