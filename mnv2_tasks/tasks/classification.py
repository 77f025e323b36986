"""Image classification: cross-entropy (optional label smoothing), top-1/top-5 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from .base import TaskModule


class ClassificationModule(TaskModule):
    """Batches ``{"image": (N, 3, H, W), "target": (N,) int64}``; ``net(images) -> (N, num_classes)`` logits.

    Metrics: ``top1`` and ``top5`` as fractions in [0, 1] (``top5`` is top-min(5, num_classes)),
    accumulated over the whole validation set and reduced over DDP ranks by torchmetrics.
    """

    def __init__(self, net: nn.Module, optimizer, scheduler: dict | None = None, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(net, optimizer, scheduler, **kwargs)
        self.label_smoothing = label_smoothing
        num_classes = net.num_classes
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.num_samples = SumMetric()

    def setup(self, stage: str) -> None:
        self.checked_datamodule()

    def model_step(self, batch: dict, stage: str):
        images = batch["image"]
        raw = self.raw_outputs(images)
        logits = self.net.train_outputs(raw, images)  # (N, num_classes)
        loss = F.cross_entropy(logits.float(), batch["target"], label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        return loss, (None if stage == "train" else self.predictions(raw, images))

    def reset_metrics(self) -> None:
        self.top1.reset()
        self.top5.reset()
        self.num_samples.reset()

    def update_metrics(self, preds: torch.Tensor, batch: dict) -> None:
        target = torch.as_tensor(batch["target"], device=self.top1.device)
        preds = torch.as_tensor(preds, device=self.top1.device)
        self.top1.update(preds, target)
        self.top5.update(preds, target)
        self.num_samples.update(float(target.numel()))

    def compute_metrics(self) -> dict:
        return {"top1": float(self.top1.compute()), "top5": float(self.top5.compute()), "num_samples": int(self.num_samples.compute())}
