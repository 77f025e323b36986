"""Object detection: SSD losses in training, COCO mAP (pycocotools) at the end of every validation.

Batches come from ``mnv2_tasks.data.coco`` (``{"image", "target", "meta"}``). The network is
``build_ssdlite(...)`` or any detector with torchvision's interface (``net(images, targets)`` ->
losses in training, ``net(images)`` -> list of ``{"boxes", "scores", "labels"}`` in eval), such as
``build_torchvision_ssdlite`` for comparisons.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..metrics.coco_eval import CocoEvaluator
from .base import TaskModule, check_num_classes

log = logging.getLogger(__name__)

__all__ = ["DetectionModule"]


class DetectionModule(TaskModule):
    """SSDLite (or another detector) trained on COCO-format data, evaluated with pycocotools.

    Args (besides ``TaskModule``'s):
        val_loss: also compute the loss on validation batches (from the same forward pass as the detections).
        predictions_file: name of the COCO results file written to the run directory at the end of
            every validation (``None``: not written).
        ann_file, label_to_cat_id: the evaluation ground truth, when no data module provides them
            (``tools/eval.py`` runners); ``setup`` takes them from the data module.

    Metrics (``compute_metrics``): ``mAP`` (AP@[.5:.95]), ``mAP50``, ``mAP75``, ``mAP_small``,
    ``mAP_medium``, ``mAP_large``, ``AR1``, ``AR10``, ``AR100``, ``AR_small``, ``AR_medium``,
    ``AR_large`` (NaN where the set has no such ground truth), ``num_images``, ``num_detections``,
    ``ann_file``, ``predictions_file``; all ranks' detections are gathered before evaluation.
    """

    classes_note = " (categories + background)"

    def __init__(
        self,
        net: nn.Module,
        optimizer,
        scheduler: dict | None = None,
        val_loss: bool = True,
        predictions_file: str | None = "val_predictions.json",
        ann_file: str | None = None,
        label_to_cat_id: Sequence[int] | None = None,
        coco_backend: str = "faster",
        **kwargs,
    ) -> None:
        super().__init__(net, optimizer, scheduler, **kwargs)
        self.coco_backend = coco_backend  # faster (faster-coco-eval) | pycocotools: the same numbers (metrics/coco_eval.py)
        self.val_loss = val_loss
        self.predictions_file = predictions_file
        self.eval_output_dir: str | None = None  # where predictions_file goes; default: the trainer's default_root_dir
        self.evaluator: CocoEvaluator | None = None
        self.anchor_report: dict | None = None
        self.category_ids: list[int] | None = None  # set_category_ids: the data ids of labels 1..K, when not the data's order
        if ann_file is not None:
            if label_to_cat_id is None:
                raise ValueError("DetectionModule: give label_to_cat_id with ann_file")
            self.set_ground_truth(ann_file, label_to_cat_id)

    # ---- data ------------------------------------------------------------------------------
    def set_ground_truth(self, ann_file: str | Path | dict, label_to_cat_id: Sequence[int], source=None) -> None:
        """The COCO annotation file (or dict) that evaluation compares with, and the label -> category id map;
        ``source``: the file a dict was kept from (named in ``metrics.json``)."""
        if source is None:
            source = str(ann_file) if not isinstance(ann_file, dict) else "<in memory>"
        self.gt_source = str(source)
        check_num_classes(len(label_to_cat_id), self.net, source, self.classes_note)
        if self.category_ids is not None:  # the model's classes matched to the data by name
            label_to_cat_id = [label_to_cat_id[0], *self.category_ids]
        self.evaluator = CocoEvaluator(ann_file, label_to_cat_id, self.coco_backend)

    def set_category_ids(self, category_ids: list[int]) -> None:
        """Write these data set ids for labels 1..K (a model whose classes were matched to the data by name)."""
        self.category_ids = [int(c) for c in category_ids]
        if self.evaluator is not None:
            self.set_ground_truth(self.evaluator.ann_file, self.evaluator.label_to_cat_id, self.gt_source)

    def setup(self, stage: str) -> None:
        dm = self.checked_datamodule()
        if dm is None:
            return
        if dm.val_ann_file is not None:  # exactly the ground truth the data module kept (and reported dropping)
            self.set_ground_truth(dm.val_ground_truth, dm.label_to_cat_id, source=dm.val_ann_file)
        if stage == "fit" and dm.train_set is not None:
            self._report_anchor_coverage(dm)

    # the anchor-coverage report matches every training box against every anchor: on a very large set (COCO: 860k
    # boxes x 2,034 anchors, about a minute) a seeded random sample of this many boxes, as the log says
    coverage_sample: int = 100_000

    def _report_anchor_coverage(self, dm) -> None:
        """Log how well the network's anchors cover the training boxes (resized to the input size); rank 0 only."""
        from ..models.anchors import format_coverage
        from ..models.contract import image_hw

        if self._trainer is not None and not self.trainer.is_global_zero:
            return
        in_h, in_w = image_hw(dm.image_size)
        boxes = dm.train_set.training_boxes((in_h, in_w))
        if not len(boxes):
            return
        note = f"all {len(boxes)} training boxes"
        if len(boxes) > self.coverage_sample:
            pick = np.random.default_rng(0).choice(len(boxes), self.coverage_sample, replace=False)
            boxes, note = boxes[np.sort(pick)], f"a random sample of {self.coverage_sample} of the {len(boxes)} training boxes"
        self.anchor_report = self.net.target_coverage(torch.from_numpy(boxes), (in_h, in_w))
        if self.anchor_report is not None:
            log.info("%s (%s, %dx%d input)", format_coverage(self.anchor_report), note, in_h, in_w)

    # ---- the step --------------------------------------------------------------------------
    def model_step(self, batch: dict, stage: str):
        images, targets = batch["image"], batch["target"]
        raw = self.raw_outputs(images)  # one forward pass for the losses and the detections
        loss = self.net.train_outputs(raw, images, targets) if stage == "train" or self.val_loss else None
        return loss, (None if stage == "train" else self.predictions(raw, images))

    # ---- metrics ---------------------------------------------------------------------------
    def _require_evaluator(self) -> CocoEvaluator:
        if self.evaluator is None:
            raise RuntimeError(
                "DetectionModule has no evaluation ground truth: train/validate with a COCO data module, "
                "or call set_ground_truth(ann_file, label_to_cat_id) first"
            )
        return self.evaluator

    def reset_metrics(self) -> None:
        self._require_evaluator().reset()

    def update_metrics(self, preds: list[dict], batch: dict) -> None:
        self._require_evaluator().update(preds, batch["meta"])

    def _predictions_path(self) -> Path | None:
        if not self.predictions_file:
            return None
        out_dir = self.eval_output_dir
        if out_dir is None and self._trainer is not None:
            out_dir = self.trainer.default_root_dir
        return Path(out_dir) / self.predictions_file if out_dir is not None else None

    def evaluate_with(self, fn, dataloader, progress: bool = True) -> dict:
        """``TaskModule.evaluate_with``; the ground truth defaults to the loader's ``CocoDetection`` set."""
        ds = getattr(dataloader, "dataset", None)
        if self.evaluator is None and hasattr(ds, "ground_truth") and hasattr(ds, "label_to_cat_id"):
            self.set_ground_truth(ds.ground_truth(), ds.label_to_cat_id, source=ds.ann_file)
        return super().evaluate_with(fn, dataloader, progress)

    def compute_metrics(self) -> dict:
        ev = self._require_evaluator()
        path = self._predictions_path()
        metrics = ev.compute(path)
        metrics["ann_file"] = self.gt_source
        metrics["ground_truth_as_kept"] = isinstance(ev.ann_file, dict)  # the file less what the data module dropped
        metrics["predictions_file"] = str(path) if path is not None else None
        if self.anchor_report is not None:
            metrics["anchor_coverage"] = self.anchor_report["covered"]
        return metrics
