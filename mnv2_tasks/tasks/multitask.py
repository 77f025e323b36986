"""Detection and segmentation from one network (``task=multitask``): both losses, both metrics.

Batches come from ``data.coco_multitask`` (``{"image", "target", "mask", "meta"}``). The loss is
the detector's (``bbox_regression`` + ``classification``) plus ``seg_weight`` x the pixel-wise
cross-entropy (``seg``), each logged on its own. Every validation computes COCO mAP (pycocotools)
and mIoU (confusion matrix) under the single tasks' keys (``mAP``, ``mAP50``, ..., ``mIoU``,
``iou_<class>``, ...), so ``metrics.json`` reads like both single-task runs at once.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..metrics.segmentation import ConfusionMatrix
from .detection import DetectionModule
from .segmentation import segmentation_loss

__all__ = ["MultiTaskModule"]


class MultiTaskModule(DetectionModule):
    """``DetectionModule`` plus the segmentation head's loss and metrics.

    Args (besides ``DetectionModule``'s):
        seg_weight: weight of the segmentation loss in the total.
        seg_class_names: names for the per-class IoU keys (``iou_<name>``); default: the data module's
            ``seg_class_names`` (background, then the categories).
    """

    def __init__(self, net: nn.Module, optimizer, scheduler: dict | None = None, seg_weight: float = 1.0,
                 seg_class_names: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(net, optimizer, scheduler, **kwargs)
        self.seg_weight = seg_weight
        self.confmat = ConfusionMatrix(net.num_classes, list(seg_class_names) if seg_class_names is not None else None)
        self._seg_names_given = seg_class_names is not None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and not self._seg_names_given:
            self.confmat = ConfusionMatrix(self.net.num_classes, dm.seg_class_names)

    def model_step(self, batch: dict, stage: str):
        images = batch["image"]
        raw = self.raw_outputs(images)  # one trunk pass for both heads
        loss = None
        if stage == "train" or self.val_loss:
            out = self.net.train_outputs(raw, images, batch["target"])
            loss = {**out["detection"], "seg": self.seg_weight * segmentation_loss(out["segmentation"]["out"], batch["mask"])}
        return loss, (None if stage == "train" else self.predictions(raw, images))

    def reset_metrics(self) -> None:
        super().reset_metrics()
        self.confmat.reset()

    def update_metrics(self, preds: dict, batch: dict) -> None:
        super().update_metrics(preds["detections"], batch)
        self.confmat.update(preds["segmentation"], batch["mask"])

    def compute_metrics(self) -> dict:
        return {**super().compute_metrics(), **self.confmat.compute()}
