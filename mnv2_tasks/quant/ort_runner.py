"""Run an exported ``.onnx`` file in ONNX Runtime and answer like the PyTorch network does in eval mode.

``OrtModel(path)(images)`` returns what ``net(images)`` returns: classifier logits
``(N, K)``, segmentation logits ``(N, K, H, W)`` (an argmax export answers with one-hot
scores, which gives the same argmax), or SSDLite's list of ``{"boxes", "scores", "labels"}``.
So ``TaskModule.evaluate_with(OrtModel(path), loader)`` computes the task's own metric on
the ONNX file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

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
        self.kind = self.meta.get("mnv2_kind", "classifier")
        self.outputs = self.meta.get("mnv2_outputs", "logits")
        self.num_classes = int(self.meta["num_classes"]) if "num_classes" in self.meta else None
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
        out = self.run(images)
        if self.kind == "classifier":
            return torch.from_numpy(out["logits"])
        if self.kind == "deeplabv3":
            if "logits" in out:
                return torch.from_numpy(out["logits"])
            mask = torch.from_numpy(out["mask"]).long()  # (N, H, W)
            k = self.num_classes or int(mask.max()) + 1
            return torch.nn.functional.one_hot(mask, k).permute(0, 3, 1, 2).float()  # (N, K, H, W)
        if self.kind == "ssdlite":
            return _detections(out, self.meta, images)
        raise ValueError(f"{self.path}: unknown model kind {self.kind!r} in the file's metadata")


def _detections(out: dict[str, np.ndarray], meta: dict, images: torch.Tensor) -> list[dict]:
    """Padded NMS-in-graph outputs, or raw decoded outputs (NMS run here with the file's settings) -> per-image dicts."""
    if "num_detections" in out:
        result = []
        for i, n in enumerate(out["num_detections"].astype(np.int64).reshape(-1)):
            result.append({
                "boxes": torch.from_numpy(out["boxes"][i, :n]).float(),
                "scores": torch.from_numpy(out["scores"][i, :n]).float(),
                "labels": torch.from_numpy(out["labels"][i, :n]).long(),
            })
        return result
    from types import SimpleNamespace

    from ..models.ssdlite import PostprocessConfig, SSDLite, split_detections

    cfg = PostprocessConfig(
        score_thresh=float(meta["postprocess_score_thresh"]), nms_thresh=float(meta["postprocess_nms_thresh"]),
        topk_candidates=int(meta["postprocess_topk_candidates"]), detections_per_img=int(meta["postprocess_detections_per_img"]),
    )
    boxes, scores = torch.from_numpy(out["boxes"]).float(), torch.from_numpy(out["scores"]).float()
    # SSDLite's own selection (top-k, NMS, threshold) on the decoded outputs; it reads only postprocess_cfg
    flat = SSDLite.select_detections(SimpleNamespace(postprocess_cfg=cfg), boxes, scores, images.shape[-2:])
    return split_detections(flat[:4], boxes.shape[0])


def onnx_predict_fn(path: str | Path, task: str | None = None, threads: int = 2) -> OrtModel:
    """``OrtModel(path)``, refusing a file exported for another task (``tools/eval.py`` with an ``.onnx``)."""
    model = OrtModel(path, threads)
    file_task = model.meta.get("task") or _KIND_TASK.get(model.kind)
    if task is not None and file_task and file_task != task:
        raise ValueError(f"{path}: an ONNX model of task '{file_task}', but the run is task '{task}'; run with task={file_task}")
    return model


_KIND_TASK = {"classifier": "classification", "deeplabv3": "segmentation", "ssdlite": "detection"}
