"""Semantic segmentation metrics from one confusion matrix over the whole evaluation set.

Not averaged per batch: every pixel of every image counts once, and under DDP the matrices of
all ranks are summed (``torch.distributed.all_reduce``) before anything is derived from them.
Pixels labelled 255 (ignore) never count. A class with no ground-truth pixel and no predicted
pixel is *absent*: its IoU is NaN (``None`` in metrics.json) and it is left out of the mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "segmentation_scores"]

IGNORE_INDEX = 255


class ConfusionMatrix:
    """``num_classes`` x ``num_classes`` pixel counts, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.mat: torch.Tensor | None = None  # created on the device of the first update

    def reset(self) -> None:
        self.mat = None

    @torch.no_grad()
    def update(self, preds, target) -> None:
        """``preds``: (N, K, H, W) logits or (N, H, W) class ids (tensor or array); ``target``: (N, H, W), 255 = ignore."""
        preds, target = torch.as_tensor(preds), torch.as_tensor(target)
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)  # (N, K, H, W) -> (N, H, W)
        target = target.to(preds.device)
        if preds.shape != target.shape:
            raise ValueError(f"predictions of shape {tuple(preds.shape)} do not match targets of shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        t, p = target[valid].long(), preds[valid].long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(f"target holds class ids outside 0..{self.num_classes - 1} (and not {self.ignore_index})")
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
            raise ValueError(f"predictions hold class ids outside 0..{self.num_classes - 1}")
        counts = torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
        counts = counts.reshape(self.num_classes, self.num_classes)
        self.mat = counts if self.mat is None else self.mat + counts.to(self.mat.device)

    def synced(self) -> torch.Tensor:
        """The matrix summed over all ranks (every rank must call this when distributed)."""
        mat = self.mat if self.mat is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            mat = mat.clone()
            if torch.distributed.get_backend() == "nccl" and not mat.is_cuda:
                mat = mat.cuda()
            torch.distributed.all_reduce(mat, op=torch.distributed.ReduceOp.SUM)
        return mat.cpu()

    def compute(self) -> dict:
        """``mIoU``, ``pixel_acc``, ``mAcc``, ``iou_<class>`` (NaN when absent), ``absent_classes`` and ``num_pixels``."""
        return segmentation_scores(self.synced().numpy(), self.class_names)


def segmentation_scores(mat: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """Scores from a confusion matrix (rows ground truth, columns prediction).

    IoU_c = TP / (TP + FP + FN): NaN when the class is absent (no ground truth, no prediction),
    0 when it is only predicted. ``mIoU`` and ``mAcc`` (mean per-class recall, over the classes
    with ground truth) average the defined values; NaN if there are none.
    """
    mat = np.asarray(mat, dtype=np.float64)
    k = mat.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    tp = np.diag(mat)
    gt, pred = mat.sum(1), mat.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    total = mat.sum()
    out: dict = {
        "mIoU": _nanmean(iou),
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "mAcc": _nanmean(recall),
        "num_pixels": int(total),
    }
    for name, v in zip(names, iou):
        out[f"iou_{name}"] = float(v)
    out["absent_classes"] = [name for name, u in zip(names, union) if u == 0]
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan
