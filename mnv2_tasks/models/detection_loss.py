"""SSD training targets and loss: anchor matching, hard negative mining, box and class losses (fp32).

- ``match_anchors``: every anchor takes the ground-truth box it overlaps most if IoU >= threshold,
  and every ground-truth box takes its best anchor whatever the IoU (SSD's matching strategy),
  so that no box is left without a positive anchor.
- ``DetectionLoss``: smooth L1 (or GIoU) on the matched anchors' offsets, and cross-entropy with
  3:1 hard negative mining (or sigmoid focal loss over all anchors), both divided by the number
  of positive anchors in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from .box_coder import BoxCoder

__all__ = ["match_anchors", "hard_negatives", "DetectionLoss", "BACKGROUND", "IGNORE"]

BACKGROUND = -1  # matched index of an anchor that is a negative
IGNORE = -2  # neither positive nor negative (overlaps an ignore region, e.g. a crowd box)


def match_anchors(
    gt_boxes: torch.Tensor,
    anchors: torch.Tensor,
    iou_threshold: float = 0.5,
    ignore_boxes: torch.Tensor | None = None,
    ignore_ioa: float = 0.5,
) -> torch.Tensor:
    """(A,) index into ``gt_boxes`` (M, 4) for every anchor (A, 4); ``BACKGROUND`` or ``IGNORE`` otherwise.

    Anchors that are not positives and have at least ``ignore_ioa`` of their area inside one of
    ``ignore_boxes`` are ``IGNORE``d.
    """
    num_anchors = anchors.shape[0]
    matched = torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    if gt_boxes.numel():
        iou = box_iou(gt_boxes, anchors)  # (M, A)
        best_iou, best_gt = iou.max(dim=0)  # per anchor
        matched = torch.where(best_iou >= iou_threshold, best_gt, matched)
        # every ground-truth box gets its best anchor (later boxes win a shared anchor)
        best_anchor = iou.argmax(dim=1)  # (M,)
        matched[best_anchor] = torch.arange(gt_boxes.shape[0], device=anchors.device)
    if ignore_boxes is not None and ignore_boxes.numel():
        lt = torch.max(anchors[:, None, :2], ignore_boxes[None, :, :2])
        rb = torch.min(anchors[:, None, 2:], ignore_boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)  # (A, I)
        area = (anchors[:, 2:] - anchors[:, :2]).prod(-1).clamp(min=1e-6)
        ioa = (inter / area[:, None]).max(dim=1).values
        matched = torch.where((matched == BACKGROUND) & (ioa >= ignore_ioa), torch.full_like(matched, IGNORE), matched)
    return matched


def hard_negatives(loss: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, neg_pos_ratio: float = 3.0,
                   empty_image_negatives: float | None = None) -> torch.Tensor:
    """(N, A) mask of the negatives kept by hard negative mining: per image, the ``neg_pos_ratio * positives``
    non-positive, valid anchors with the largest ``loss`` (N, A); an image without positives keeps
    ``empty_image_negatives`` (default ``neg_pos_ratio``; torchvision's SSD: 0)."""
    neg_loss = loss.clone()
    neg_loss[positive | ~valid] = -float("inf")
    num_pos = positive.sum(1, keepdim=True)  # (N, 1)
    empty = neg_pos_ratio if empty_image_negatives is None else empty_image_negatives
    num_neg = torch.where(num_pos > 0, neg_pos_ratio * num_pos, float(empty)).long()  # (N, 1)
    rank = neg_loss.argsort(dim=1, descending=True).argsort(dim=1)  # rank of every anchor's loss in its image
    return (rank < num_neg) & torch.isfinite(neg_loss)


class DetectionLoss:
    """``loss(bbox_regression (N, A, 4), cls_logits (N, A, C), anchors (A, 4), targets) -> {"bbox_regression", "classification"}``.

    ``targets``: one dict per image with ``boxes`` (M, 4) xyxy in input pixels, ``labels`` (M,) in
    ``1..C-1`` and optionally ``ignore_boxes`` (I, 4). Computed in fp32 whatever the autocast state.

    Args:
        box_coder: the coder the head's offsets are in.
        iou_threshold: anchor-to-box IoU for a positive.
        neg_pos_ratio: negatives kept per positive by hard negative mining (cross-entropy only);
            an image with no positive still gives ``neg_pos_ratio`` negatives.
        box_loss: ``"smooth_l1"`` on the offsets or ``"giou"`` on the decoded boxes.
        cls_loss: ``"ce"`` (softmax with background, hard negative mining) or ``"focal"``
            (sigmoid per class, every non-ignored anchor, no mining).
        empty_image_negatives: hard negatives kept in an image without positives (default
            ``neg_pos_ratio``; torchvision's SSD keeps none).
        ignore_crowd: anchors mostly inside a target's ``ignore_boxes`` (crowd regions) are neither
            positives nor negatives; ``False`` makes them negatives, as torchvision's SSD (which has no
            ignore regions) does.
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        iou_threshold: float = 0.5,
        neg_pos_ratio: float = 3.0,
        box_loss: str = "smooth_l1",
        cls_loss: str = "ce",
        smooth_l1_beta: float = 1.0,
        bbox_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        empty_image_negatives: float | None = None,
        ignore_crowd: bool = True,
    ) -> None:
        if box_loss not in ("smooth_l1", "giou"):
            raise ValueError(f"box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
        if cls_loss not in ("ce", "focal"):
            raise ValueError(f"cls_loss must be 'ce' or 'focal', got {cls_loss!r}")
        self.box_coder = box_coder
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.box_loss, self.cls_loss = box_loss, cls_loss
        self.smooth_l1_beta, self.bbox_weight = smooth_l1_beta, bbox_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.empty_image_negatives, self.ignore_crowd = empty_image_negatives, ignore_crowd

    def match(self, anchors: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """(N, A) matched ground-truth index per anchor (``BACKGROUND`` / ``IGNORE`` otherwise)."""
        return torch.stack([
            match_anchors(t["boxes"].to(anchors), anchors, self.iou_threshold, t.get("ignore_boxes") if self.ignore_crowd else None)
            for t in targets
        ])

    def __call__(self, bbox_regression: torch.Tensor, cls_logits: torch.Tensor, anchors: torch.Tensor, targets: list[dict]) -> dict:
        device_type = bbox_regression.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._loss(bbox_regression.float(), cls_logits.float(), anchors.float(), targets)

    def _loss(self, bbox_regression, cls_logits, anchors, targets) -> dict:
        n, a, c = cls_logits.shape
        matched = self.match(anchors, targets)  # (N, A)
        positive = matched >= 0
        num_pos = int(positive.sum())
        denom = max(1, num_pos)

        # targets per anchor: class (0 = background) and matched box
        cls_target = torch.zeros((n, a), dtype=torch.int64, device=cls_logits.device)
        gt_boxes = torch.zeros((n, a, 4), dtype=torch.float32, device=cls_logits.device)
        for i, t in enumerate(targets):
            pos_i = positive[i]
            if pos_i.any():
                idx = matched[i, pos_i]
                cls_target[i, pos_i] = t["labels"].to(cls_logits.device)[idx]
                gt_boxes[i, pos_i] = t["boxes"].to(gt_boxes)[idx]
        labels = cls_target[positive]
        if labels.numel() and (labels.min() < 1 or labels.max() >= c):
            raise ValueError(f"target labels must be in 1..{c - 1} (0 is the background), got {labels.unique().tolist()}")

        # box loss on positives
        pos_anchors = anchors[None].expand(n, -1, -1)[positive]
        if self.box_loss == "smooth_l1":
            target_deltas = self.box_coder.encode(gt_boxes[positive], pos_anchors)
            box = F.smooth_l1_loss(bbox_regression[positive], target_deltas, beta=self.smooth_l1_beta, reduction="sum")
        else:
            pred_boxes = self.box_coder.decode(bbox_regression[positive], pos_anchors)
            box = generalized_box_iou_loss(pred_boxes, gt_boxes[positive], reduction="sum")

        # class loss
        valid = matched != IGNORE
        if self.cls_loss == "focal":
            onehot = F.one_hot(cls_target, c)[..., 1:].to(cls_logits.dtype)  # background = all zeros
            focal = sigmoid_focal_loss(cls_logits[..., 1:], onehot, self.focal_alpha, self.focal_gamma, reduction="none").sum(-1)
            cls = focal[valid].sum()
        else:
            ce = F.cross_entropy(cls_logits.reshape(-1, c), cls_target.reshape(-1), reduction="none").view(n, a)
            negative = hard_negatives(ce.detach(), positive, valid, self.neg_pos_ratio, self.empty_image_negatives)
            cls = ce[positive].sum() + ce[negative].sum()
        return {"bbox_regression": self.bbox_weight * box / denom, "classification": cls / denom}
