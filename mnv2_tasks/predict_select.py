"""What a caller keeps of a frame's detections: ``--conf``, ``--iou``, ``--classes``, ``--max-det`` (Ultralytics'
names), applied before anything is written, and checked against what the model file itself keeps.

An exported file may have its post-processing baked in (``mnv2-export --postprocess deploy``: score >= 0.3, 50 boxes);
asking it for lower scores, a looser NMS or more boxes cannot bring back what the graph dropped, so ``check_request``
refuses it with both values instead of silently returning fewer boxes than asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Selection", "select", "check_request", "DET_KEYS"]

# the per-detection entries of a frame result (models/results.py)
DET_KEYS = ("boxes", "scores", "labels", "category_ids", "names", "track_ids")


@dataclass(frozen=True)
class Selection:
    """``conf``: minimum score; ``iou``: class-wise NMS at this IoU (stricter than the model's); ``classes``: names or
    category ids to keep; ``max_det``: at most this many, best first. ``None``: the model's own."""

    conf: float | None = None
    iou: float | None = None
    classes: Sequence[str | int] | None = None
    max_det: int | None = None

    def __post_init__(self) -> None:
        for name, v in (("conf", self.conf), ("iou", self.iou)):
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name} {v}: must be in [0, 1]")
        if self.max_det is not None and self.max_det < 1:
            raise ValueError(f"--max-det {self.max_det}: must be >= 1")


def take(pred: dict, keep: np.ndarray) -> dict:
    """``pred`` with only the detections ``keep`` (indices, in that order)."""
    out = dict(pred)
    for k in DET_KEYS:
        if k in pred:
            v = pred[k]
            out[k] = [v[i] for i in keep] if isinstance(v, list) else np.asarray(v)[keep]
    return out


def select(pred: dict, sel: Selection) -> dict:
    """The detections of ``pred`` that ``sel`` keeps (a frame without detections is returned as it is)."""
    if "boxes" not in pred:
        return pred
    scores = np.asarray(pred["scores"])
    keep = np.arange(len(scores))
    if sel.conf is not None:
        keep = keep[scores[keep] >= sel.conf]
    if sel.classes is not None:
        wanted = {str(c) for c in sel.classes}
        keep = np.array([i for i in keep if str(pred["names"][i]) in wanted or str(int(pred["category_ids"][i])) in wanted],
                        dtype=np.int64)
    if sel.iou is not None and len(keep):
        import torch
        from torchvision.ops import batched_nms

        kept = batched_nms(torch.as_tensor(np.asarray(pred["boxes"])[keep], dtype=torch.float32),
                           torch.as_tensor(scores[keep], dtype=torch.float32),
                           torch.as_tensor(np.asarray(pred["labels"])[keep]), sel.iou).numpy()
        keep = keep[kept]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if sel.max_det is not None:
        keep = keep[: sel.max_det]
    return take(pred, keep)


def check_request(sel: Selection, meta: dict[str, str], source: str) -> None:
    """Refuse a selection the model file cannot serve: ``meta`` holds its baked post-processing
    (``postprocess_score_thresh``, ``_nms_thresh``, ``_detections_per_img``; empty for a file without NMS settings)."""
    if "postprocess_score_thresh" not in meta:
        return
    from .models.detection_postprocess import config_from_meta

    baked = config_from_meta(meta)
    mode = meta.get("postprocess_mode", "?")
    fix = ("export it again with --postprocess eval (score 0.001, 100 boxes), or predict with the checkpoint" if mode == "deploy"
           else "ask for at most what the file keeps")
    problems = []
    if sel.conf is not None and sel.conf < baked.score_thresh:
        problems.append(f"--conf {sel.conf} is below the {baked.score_thresh} the file keeps")
    if sel.iou is not None and sel.iou > baked.nms_thresh:
        problems.append(f"--iou {sel.iou} is looser than the file's NMS at {baked.nms_thresh}")
    if sel.max_det is not None and sel.max_det > baked.detections_per_img:
        problems.append(f"--max-det {sel.max_det} is more than the {baked.detections_per_img} boxes the file keeps")
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)} (its post-processing '{mode}' is baked in and dropped the rest); {fix}")
