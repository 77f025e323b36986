"""Semantic segmentation: pixel-wise cross-entropy (255 ignored), mIoU from a whole-set confusion matrix."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.segmentation import IGNORE_INDEX, ConfusionMatrix
from .base import TaskModule

__all__ = ["SegmentationModule", "segmentation_loss"]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of (N, K, H, W) logits against (N, H, W) targets, ignoring 255; 0 (with a graph) if every pixel is ignored."""
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX)


class SegmentationModule(TaskModule):
    """Batches ``{"image": (N, 3, H, W), "target": (N, H, W) int64 (255 = ignore)}``; ``net(images) -> (N, K, H, W)`` logits.

    Args (besides ``TaskModule``'s):
        class_names: names for the per-class IoU keys (``iou_<name>``); default: the data module's.
        class_weights: optional per-class weights of the cross-entropy (length ``num_classes``).
        aux_weight: weight of the auxiliary head's loss, when the network has one (``aux=True``).

    Metrics (``compute_metrics``): ``mIoU``, ``pixel_acc``, ``mAcc``, ``iou_<class>`` (NaN for a class
    absent from the evaluated set, i.e. no ground truth and no prediction; ``null`` in
    metrics.json), ``absent_classes``, ``num_pixels``; accumulated over the whole set, summed over ranks.
    """

    def __init__(self, net: nn.Module, optimizer, scheduler: dict | None = None, class_names: Sequence[str] | None = None,
                 class_weights: Sequence[float] | None = None, aux_weight: float = 0.4, **kwargs) -> None:
        super().__init__(net, optimizer, scheduler, **kwargs)
        num_classes = net.num_classes
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries but the model has {num_classes} classes")
        weight = torch.as_tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.aux_weight = aux_weight
        self.confmat = ConfusionMatrix(num_classes, list(class_names) if class_names is not None else None)
        self._names_given = class_names is not None

    def setup(self, stage: str) -> None:
        dm = self.checked_datamodule()
        names = dm.class_names if dm is not None else None
        if not self._names_given and names is not None and len(names) == self.net.num_classes:
            self.confmat = ConfusionMatrix(self.net.num_classes, names)

    def model_step(self, batch: dict, stage: str):
        images, target = batch["image"], batch["target"]
        raw = self.raw_outputs(images)
        out = self.net.train_outputs(raw, images)  # {"out": (N, K, H, W)}, plus "aux" when the network trains one
        loss = segmentation_loss(out["out"], target, self.class_weights)
        if "aux" in out:
            loss = {"ce": loss, "aux": self.aux_weight * segmentation_loss(out["aux"], target, self.class_weights)}
        return loss, (None if stage == "train" else self.predictions(raw, images))

    def reset_metrics(self) -> None:
        self.confmat.reset()

    def update_metrics(self, preds, batch: dict) -> None:
        self.confmat.update(preds, batch["target"])

    def compute_metrics(self) -> dict:
        return self.confmat.compute()
