"""Run an exported ``.onnx`` file in ONNX Runtime and answer like the PyTorch network does in eval mode.

``OrtModel(path)(images)`` returns what ``net(images)`` returns in eval mode, read back from
the file's recorded output format (``models/export_formats.py``): logits, one-hot scores for an
argmax mask (same argmax), or a list of ``{"boxes", "scores", "labels"}``.
So ``TaskModule.evaluate_with(OrtModel(path), loader)`` computes the task's own metric on
the ONNX file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.export_formats import outputs_from_export
from .onnx_export import check_onnx_file, onnx_metadata

__all__ = ["OrtModel", "ort_session", "onnx_predict_fn"]


def ort_session(path: str | Path, threads: int = 2):
    """An ``InferenceSession`` on CPU with ``threads`` intra-op threads and all graph optimizations on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtModel:
    """An ONNX file of this package in ONNX Runtime, callable like the network it was exported from."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        self.path = Path(path)
        model = check_onnx_file(self.path)
        self.meta = onnx_metadata(model)
        self.task = self.meta.get("task")
        self.format = self.meta.get("mnv2_outputs", "logits")
        self.num_classes = int(self.meta["num_classes"]) if "num_classes" in self.meta else None
        # what inference needs (image size, normalisation, class names, category ids), as the checkpoint records it
        self.input_spec = json.loads(self.meta.get("mnv2_input") or "{}")
        try:
            self.session = ort_session(self.path, threads)
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{self.path}: ONNX Runtime cannot load this model ({str(e)[:300]}); re-export it with tools/export.py") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name."""
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.output_names, outs))

    def __call__(self, images: torch.Tensor) -> Any:
        """What the PyTorch network returns in eval mode (read back by the file's output format)."""
        try:
            return outputs_from_export(self.format, self.run(images), self.meta, images.shape[-2:])
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.path}: {e}") from None


def onnx_predict_fn(path: str | Path, task: str | None = None, threads: int = 2) -> OrtModel:
    """``OrtModel(path)``, refusing a file exported for another task (evaluation with an ``.onnx``)."""
    model = OrtModel(path, threads)
    if task is not None and model.task and model.task != task:
        raise ValueError(f"{path}: an ONNX model of task '{model.task}', but the run is task '{task}'; run with task={model.task}")
    return model
