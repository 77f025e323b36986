"""The output formats of exported files, and how any runtime's outputs are read back.

A network declares which formats it exports (``TaskNet.export_formats``); the file records its
format (``mnv2_outputs``) and task in its metadata. ``outputs_from_export`` turns a runtime's
outputs (by name) into what the PyTorch network returns in eval mode, so that the task's own
metric code scores every runtime:

- ``logits``: ``logits`` (N, K) or (N, K, H, W) -> that tensor.
- ``argmax``: ``mask`` (N, H, W) int64 -> one-hot scores (N, K, H, W) (same argmax).
- ``nms``: ``boxes`` (N, D, 4), ``scores`` (N, D), ``labels`` (N, D), ``num_detections`` (N,)
  -> one ``{"boxes", "scores", "labels"}`` per image.
- ``decoded``: ``boxes`` (N, A, 4), ``scores`` (N, A, K) (decoded, before NMS) -> NMS with the
  file's recorded settings, then one dict per image.
- ``<detection>+<segmentation>`` (``nms+logits``, ``nms+argmax``, ``decoded+logits``,
  ``decoded+argmax``): both output groups of a multi-task graph (the segmentation output is then ``seg_logits`` or ``mask``) ->
  ``{"detections": ..., "segmentation": ...}``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .detection_postprocess import config_from_meta, select_detections, split_detections

__all__ = ["FORMATS", "outputs_from_export", "without_nms"]

FORMATS: dict[str, tuple[str, ...]] = {
    "logits": ("logits",),
    "argmax": ("mask",),
    "nms": ("boxes", "scores", "labels", "num_detections"),
    "decoded": ("boxes", "scores"),
}
FORMATS["nms+logits"] = (*FORMATS["nms"], "seg_logits")
FORMATS["nms+argmax"] = (*FORMATS["nms"], "mask")
FORMATS["decoded+logits"] = (*FORMATS["decoded"], "seg_logits")
FORMATS["decoded+argmax"] = (*FORMATS["decoded"], "mask")
_ALIASES = {"raw": "decoded"}  # files written before the format was renamed


def without_nms(fmt: str, available) -> str:
    """``fmt`` with its in-graph NMS replaced by the decoded boxes and scores (for runtimes without an
    NMS kernel, e.g. ExecuTorch); NMS then runs on the outputs, with the file's recorded settings."""
    parts = ["decoded" if p == "nms" else p for p in fmt.split("+")]
    out = "+".join(parts)
    if out not in available:
        raise ValueError(f"format {fmt!r} has no NMS-free variant among {list(available)}")
    return out


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def outputs_from_export(fmt: str, outputs: Mapping[str, Any], meta: Mapping[str, str], image_size) -> Any:
    """Eval-mode outputs from an exported file's ``outputs`` in format ``fmt`` (``meta``: the file's metadata)."""
    fmt = _ALIASES.get(fmt, fmt)
    if "+" in fmt:  # a multi-task graph: a detection group and a segmentation group
        det_fmt, seg_fmt = fmt.split("+")
        seg = {"logits": outputs["seg_logits"]} if seg_fmt == "logits" else {"mask": outputs["mask"]}
        return {"detections": outputs_from_export(det_fmt, outputs, meta, image_size),
                "segmentation": outputs_from_export(seg_fmt, seg, meta, image_size)}
    if fmt == "logits":
        return _tensor(outputs["logits"]).float()
    if fmt == "argmax":
        mask = _tensor(outputs["mask"]).long()  # (N, H, W)
        k = int(meta["num_classes"]) if "num_classes" in meta else int(mask.max()) + 1
        return torch.nn.functional.one_hot(mask, k).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    if fmt == "nms":
        boxes, scores, labels = (_tensor(outputs[k]) for k in ("boxes", "scores", "labels"))
        counts = _tensor(outputs["num_detections"]).long().reshape(-1).tolist()
        return [{"boxes": boxes[i, :c].float(), "scores": scores[i, :c].float(), "labels": labels[i, :c].long()}
                for i, c in enumerate(counts)]
    if fmt == "decoded":
        boxes, scores = _tensor(outputs["boxes"]).float(), _tensor(outputs["scores"]).float()
        flat = select_detections(boxes, scores, config_from_meta(meta))
        return split_detections(flat, boxes.shape[0])
    raise ValueError(f"unknown output format {fmt!r} in the model file's metadata (known: {sorted(FORMATS)}); "
                     "re-export it with tools/export.py")
