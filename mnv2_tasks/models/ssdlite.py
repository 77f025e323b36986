"""SSDLite on MobileNetV2, as in the paper (Sandler et al., 2018, sec. 6.2).

Prediction layers sit on the expansion output of the first stride-32 block (576 channels at
stride 16, width 1.0) and on the 1280-channel stride-32 head, then on four extra layers of
512, 256, 256 and 128 channels (1x1 to half depth, 3x3 stride-2 depthwise, 1x1). Every
prediction head is depthwise-separable; activations are ReLU6; BatchNorm eps 1e-3, momentum 0.03.
At 81 classes and 320x320 it has the paper's 4.3M parameters and 0.8B MAdds.

Three tiers, as torchvision's detection models: private blocks, ``SSDLite`` which takes built
modules, and the keyword-only builder ``build_ssdlite``. ``SSDLite`` is split for export:
``forward_raw(images) -> (bbox_regression, cls_logits)`` is the network alone, ``postprocess``
the decoding + NMS, ``detect`` both as flat tensors (``torch.export``-able with a dynamic batch),
and ``forward`` the torchvision-style interface (losses in training, a list of dicts in eval).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import nms

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .detection_loss import DetectionLoss
from .mobilenetv2 import ConvBNAct, MobileNetV2Backbone

__all__ = [
    "SSDLite", "SSDLiteHead", "SSDLiteExport", "PostprocessConfig", "EVAL_POSTPROCESS", "DEPLOY_POSTPROCESS",
    "build_ssdlite", "build_torchvision_ssdlite", "TorchvisionDetector",
]

# the paper's taps: block 13's expansion (stride 16) and the 1x1 head (stride 32); see mobilenetv2.TAPS
SSDLITE_TAPS = ("expansion", "head")
PAPER_EXTRA_CHANNELS = (512, 256, 256, 128)


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and NMS settings. ``topk_candidates``: best (anchor, class) pairs per image kept
    before NMS; ``detections_per_img``: kept after NMS."""

    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int


# evaluation: many low-confidence detections, as COCO mAP wants (it reads the best 100 per image)
EVAL_POSTPROCESS = PostprocessConfig(score_thresh=0.001, nms_thresh=0.55, topk_candidates=1000, detections_per_img=100)
# deployment: confident detections only
DEPLOY_POSTPROCESS = PostprocessConfig(score_thresh=0.3, nms_thresh=0.45, topk_candidates=200, detections_per_img=50)


def _extra_block(in_chs: int, out_chs: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """1x1 to half depth, 3x3 stride-2 depthwise, 1x1 to ``out_chs``; (N, C, H, W) -> (N, out, ceil(H/2), ceil(W/2))."""
    mid = out_chs // 2
    return nn.Sequential(
        ConvBNAct(in_chs, mid, 1, norm_layer=norm_layer),
        ConvBNAct(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer),
        ConvBNAct(mid, out_chs, 1, norm_layer=norm_layer),
    )


def _prediction_block(in_chs: int, out_chs: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """Depthwise-separable prediction: 3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias."""
    return nn.Sequential(ConvBNAct(in_chs, in_chs, 3, groups=in_chs, norm_layer=norm_layer), nn.Conv2d(in_chs, out_chs, 1))


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    """torchvision's SSDLite initialisation of extra layers and heads."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDLiteHead(nn.Module):
    """One depthwise-separable regression and classification predictor per feature map.

    ``forward(features) -> (bbox_regression (N, sum HWA, 4), cls_logits (N, sum HWA, C))``, flattened
    in (level, y, x, anchor) order, the order of ``AnchorGenerator``.
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 norm_layer: Callable[..., nn.Module], cls_bias_prior: float | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bbox_reg = nn.ModuleList(_prediction_block(c, 4 * a, norm_layer) for c, a in zip(in_channels, num_anchors))
        self.cls_logits = nn.ModuleList(_prediction_block(c, num_classes * a, norm_layer) for c, a in zip(in_channels, num_anchors))
        _normal_init(self)
        if cls_bias_prior is not None:  # focal loss: start every class at a low probability (RetinaNet)
            import math

            for block in self.cls_logits:
                nn.init.constant_(block[-1].bias, -math.log((1 - cls_bias_prior) / cls_bias_prior))

    @staticmethod
    def _flatten(x: torch.Tensor, k: int) -> torch.Tensor:
        n, _, h, w = x.shape
        # (N, A*K, H, W) -> (N, A, K, H, W) -> (N, H, W, A, K) -> (N, HWA, K)
        return x.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reg = torch.cat([self._flatten(m(f), 4) for m, f in zip(self.bbox_reg, features)], dim=1)
        cls = torch.cat([self._flatten(m(f), self.num_classes) for m, f in zip(self.cls_logits, features)], dim=1)
        return reg, cls


class SSDLite(nn.Module):
    """Single-shot detector from built parts.

    Args:
        backbone: returns a list of feature maps and declares them in ``feature_info``.
        extras: blocks applied one after another to the last backbone feature; each output is a level.
        head: ``SSDLiteHead`` over all levels.
        anchor_generator: default boxes, one level per feature map.
        box_coder, loss: offsets encoding and the training loss.
        postprocess: named ``PostprocessConfig`` presets (``"eval"`` and ``"deploy"``);
            ``postprocess_mode`` picks the one ``forward`` uses in eval mode.
        score_fn: ``"softmax"`` (cross-entropy with a background class) or ``"sigmoid"`` (focal loss).
        image_size: the nominal (H, W) input, for export and benchmarks; any size runs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        extras: nn.ModuleList,
        head: SSDLiteHead,
        anchor_generator: AnchorGenerator,
        box_coder: BoxCoder,
        loss: DetectionLoss,
        postprocess: dict[str, PostprocessConfig],
        postprocess_mode: str = "eval",
        score_fn: str = "softmax",
        image_size: tuple[int, int] = (320, 320),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = extras
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.loss = loss
        self.num_classes = head.num_classes
        self.postprocess_presets = dict(postprocess)
        if score_fn not in ("softmax", "sigmoid"):
            raise ValueError(f"score_fn must be 'softmax' or 'sigmoid', got {score_fn!r}")
        self.score_fn = score_fn
        self.image_size = tuple(image_size)
        self.use_postprocess(postprocess_mode)
        self.anchors(self.image_size)  # cached now, so that tracing at the nominal size reads a constant

    # ---- configuration ---------------------------------------------------------------------
    def use_postprocess(self, mode: str = "eval", **overrides) -> "SSDLite":
        """Select the ``"eval"`` or ``"deploy"`` preset, with field overrides (``score_thresh=0.5``)."""
        if mode not in self.postprocess_presets:
            raise ValueError(f"postprocess mode {mode!r} unknown; choose from {sorted(self.postprocess_presets)}")
        self.postprocess_mode = mode
        self.postprocess_cfg = replace(self.postprocess_presets[mode], **overrides)
        return self

    # ---- network ---------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> one feature map per level: the backbone taps, then every extra layer."""
        feats = list(self.backbone(images))
        x = feats[-1]
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats

    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (bbox_regression (N, A, 4) offsets, cls_logits (N, A, num_classes)); A = anchors(H, W)."""
        return self.head(self.features(images))

    def anchors(self, image_size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """(A, 4) xyxy anchors in pixels for an input of ``image_size = (H, W)``; no forward pass."""
        grids = self.grid_sizes(image_size)
        return self.anchor_generator.grid_anchors(grids, image_size).to(device)

    def grid_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map sizes per level, from the backbone's declared reductions (3x3/s2 convs: ceil)."""
        h, w = int(image_size[0]), int(image_size[1])
        sizes = []
        for r in self.backbone.feature_info.reduction():
            gh, gw = h, w
            for _ in range(int(r).bit_length() - 1):  # each stride-2 layer: ceil(x / 2)
                gh, gw = (gh + 1) // 2, (gw + 1) // 2
            sizes.append((gh, gw))
        for _ in self.extras:
            gh, gw = (sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2
            sizes.append((gh, gw))
        return sizes

    # ---- training --------------------------------------------------------------------------
    def compute_loss(self, raw: tuple[torch.Tensor, torch.Tensor], targets: list[dict], image_size) -> dict:
        """Loss dict from ``forward_raw`` outputs; ``targets`` boxes in input pixels, labels in 1..C-1.

        ``image_size``: (H, W) of the input, or the input batch itself.
        """
        bbox_regression, cls_logits = raw
        return self.loss(bbox_regression, cls_logits, self.anchors(_hw(image_size), bbox_regression.device), targets)

    # ---- inference: every step works on raw outputs, from this model or an exported copy --------
    def decode_raw(self, raw: tuple[torch.Tensor, torch.Tensor], image_size) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_raw`` outputs -> (boxes (N, A, 4) xyxy input pixels, clipped; scores (N, A, C-1), class ``j`` = label ``j+1``)."""
        bbox_regression, cls_logits = (torch.as_tensor(t) for t in raw)
        h, w = _hw(image_size)
        anchors = self.anchors((h, w), bbox_regression.device)
        boxes = self.box_coder.decode(bbox_regression.float(), anchors)  # (N, A, 4)
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
        logits = cls_logits.float()
        scores = logits.softmax(-1)[..., 1:] if self.score_fn == "softmax" else logits[..., 1:].sigmoid()
        return boxes, scores

    def select_detections(self, boxes: torch.Tensor, scores: torch.Tensor, image_size) -> tuple[torch.Tensor, ...]:
        """Top-k, per-class NMS and score threshold over a batch of decoded ``boxes`` (N, A, 4) and ``scores`` (N, A, K).

        Returns flat ``boxes (M, 4)``, ``scores (M,)``, ``labels (M,)`` in 1..K, ``batch_index (M,)`` and
        ``rank (M,)`` (position within its image), ordered by image then score. Written for
        ``torch.export``: one ``torchvision.ops.nms`` over the whole batch with per-(image, class)
        coordinate offsets (``batched_nms``'s trick, without its data-dependent per-class loop).
        """
        cfg = self.postprocess_cfg
        h, w = _hw(image_size)
        n, a, k_cls = scores.shape
        k = min(cfg.topk_candidates, a * k_cls)
        top_scores, idx = scores.reshape(n, a * k_cls).topk(k, dim=1)  # (N, k), sorted
        anchor_idx = idx // k_cls
        labels = idx % k_cls + 1
        cand = boxes.gather(1, anchor_idx.unsqueeze(-1).expand(n, k, 4))  # (N, k, 4)
        batch_index = torch.arange(n, device=boxes.device).unsqueeze(1).expand(n, k)
        cand, top_scores = cand.reshape(-1, 4), top_scores.reshape(-1)
        labels, batch_index = labels.reshape(-1), batch_index.reshape(-1)
        # boxes of different (image, class) never overlap once shifted apart by more than the image
        offsets = (batch_index * (k_cls + 1) + labels).to(cand.dtype) * float(max(h, w) + 1)
        keep = nms(cand + offsets[:, None], top_scores, cfg.nms_thresh)  # sorted by score, all images
        keep = keep[top_scores[keep] > cfg.score_thresh]
        # order by image (stable: score order within an image), then at most detections_per_img each
        # group by image, keeping the score order inside each (unique keys: a stable sort that exports to ONNX)
        keep = keep[(batch_index[keep] * keep.shape[0] + torch.arange(keep.shape[0], device=keep.device)).argsort()]
        kb = batch_index[keep]
        onehot = (kb[:, None] == torch.arange(n, device=kb.device)[None, :]).to(torch.int64)  # (M, N)
        rank = (onehot.cumsum(0) * onehot).sum(1) - 1
        keep, rank = keep[rank < cfg.detections_per_img], rank[rank < cfg.detections_per_img]
        return cand[keep], top_scores[keep], labels[keep], batch_index[keep], rank

    def detect_from_raw(self, raw: tuple[torch.Tensor, torch.Tensor], image_size) -> tuple[torch.Tensor, ...]:
        """``forward_raw`` outputs -> flat ``(boxes, scores, labels, batch_index)`` (see ``select_detections``)."""
        return self.select_detections(*self.decode_raw(raw, image_size), image_size)[:4]

    def detect(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> flat ``(boxes, scores, labels, batch_index)``; exportable with a dynamic batch."""
        return self.detect_from_raw(self.forward_raw(images), images.shape[-2:])

    def postprocess(self, raw: tuple[torch.Tensor, torch.Tensor], image_size) -> list[dict]:
        """``forward_raw`` outputs (of this model or an exported copy) -> one ``{"boxes", "scores", "labels"}`` per image."""
        flat = self.detect_from_raw(raw, image_size)
        return split_detections(flat, torch.as_tensor(raw[0]).shape[0])

    def postprocess_decoded(self, boxes: torch.Tensor, scores: torch.Tensor, image_size) -> list[dict]:
        """``decode_raw`` outputs (e.g. of a runtime that ran the decoding) -> one dict per image."""
        boxes, scores = torch.as_tensor(boxes).float(), torch.as_tensor(scores).float()
        return split_detections(self.select_detections(boxes, scores, image_size)[:4], boxes.shape[0])

    def postprocess_export(self, raw: tuple[torch.Tensor, torch.Tensor], image_size) -> tuple[torch.Tensor, ...]:
        """Padded, fixed-shape detections: ``boxes (N, D, 4)``, ``scores (N, D)``, ``labels (N, D)`` int64 and
        ``num_detections (N,)``, D = ``detections_per_img``; rows past ``num_detections`` are zeros."""
        n = torch.as_tensor(raw[0]).shape[0]
        d = self.postprocess_cfg.detections_per_img
        boxes, scores, labels, batch_index, rank = self.select_detections(*self.decode_raw(raw, image_size), image_size)
        slot = batch_index * d + rank
        out_boxes = boxes.new_zeros((n * d, 4)).index_put((slot,), boxes).reshape(n, d, 4)
        out_scores = scores.new_zeros((n * d,)).index_put((slot,), scores).reshape(n, d)
        out_labels = labels.new_zeros((n * d,)).index_put((slot,), labels).reshape(n, d)
        num = torch.zeros(n, dtype=torch.int64, device=boxes.device).index_add(0, batch_index, torch.ones_like(batch_index))
        return out_boxes, out_scores, out_labels, num

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        """Training (with ``targets``): dict of losses. Eval: list of ``{"boxes" (K, 4) xyxy pixels, "scores", "labels"}``."""
        if self.training:
            if targets is None:
                raise ValueError("SSDLite in training mode needs targets: a list of {'boxes', 'labels'} per image")
            return self.compute_loss(self.forward_raw(images), targets, images.shape[-2:])
        return split_detections(self.detect(images), images.shape[0])


def _hw(image_size) -> tuple[int, int]:
    """(H, W) from a size pair or from an image batch (N, 3, H, W)."""
    if isinstance(image_size, torch.Tensor) and image_size.dim() >= 3:
        image_size = image_size.shape[-2:]
    return int(image_size[0]), int(image_size[1])


def split_detections(flat: tuple[torch.Tensor, ...], batch_size: int) -> list[dict]:
    """Flat ``(boxes, scores, labels, batch_index)`` -> one dict per image (eager only)."""
    boxes, scores, labels, batch_index = flat
    counts = torch.bincount(batch_index, minlength=batch_size).tolist()
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(boxes.split(counts), scores.split(counts), labels.split(counts))
    ]


class SSDLiteExport(nn.Module):
    """What to export. ``outputs``: ``"flat"`` -> ``(boxes (M, 4), scores, labels, batch_index)``;
    ``"padded"`` -> ``(boxes (N, D, 4), scores (N, D), labels (N, D), num_detections (N,))``;
    ``"raw"`` -> ``(bbox_regression, cls_logits)`` (decode them with ``SSDLite.postprocess``)."""

    def __init__(self, model: SSDLite, outputs: str = "padded") -> None:
        super().__init__()
        if outputs not in ("flat", "padded", "raw"):
            raise ValueError(f"outputs must be 'flat', 'padded' or 'raw', got {outputs!r}")
        self.model = model
        self.outputs = outputs

    def forward(self, images: torch.Tensor):
        raw = self.model.forward_raw(images)
        if self.outputs == "raw":
            return raw
        if self.outputs == "flat":
            return self.model.detect_from_raw(raw, images.shape[-2:])
        return self.model.postprocess_export(raw, images.shape[-2:])


def build_ssdlite(
    num_classes: int,
    width_mult: float = 1.0,
    size: int | Sequence[int] = 320,
    *,
    extra_channels: Sequence[int] = PAPER_EXTRA_CHANNELS,
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (2.0, 3.0),
    min_ratio: float = 0.2,
    max_ratio: float = 0.95,
    anchor_scales: Sequence[float] | None = None,
    reduce_lowest_level: bool = True,
    lowest_scale: float = 0.1,
    iou_threshold: float = 0.5,
    neg_pos_ratio: float = 3.0,
    box_loss: str = "smooth_l1",
    cls_loss: str = "ce",
    bbox_weight: float = 1.0,
    box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    eval_postprocess: dict | None = None,
    deploy_postprocess: dict | None = None,
    postprocess_mode: str = "eval",
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.03,
) -> SSDLite:
    """SSDLite-MobileNetV2. ``num_classes`` counts the background (COCO: 81 contiguous, 91 original ids).

    ``size`` is the nominal input (int or (H, W)); anchors follow any input size. Anchors: per-level
    ``aspect_ratios`` (or one list for all) with scales from ``min_ratio`` to ``max_ratio`` or explicit
    ``anchor_scales`` (levels + 1 values); ``reduce_lowest_level`` gives the first level 3 boxes
    (``lowest_scale`` square + one ratio pair), as the paper's TF configuration does (6 elsewhere). ``eval_postprocess`` / ``deploy_postprocess`` override fields
    of ``EVAL_POSTPROCESS`` / ``DEPLOY_POSTPROCESS``. Backbone weights and freezing: ``TaskModule``'s
    ``pretrained`` and ``freeze_backbone`` (or ``load_pretrained(model.backbone, path)``).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
    backbone = MobileNetV2Backbone(width_mult, out_indices=SSDLITE_TAPS, norm_layer=norm_layer)
    tap_channels = list(backbone.feature_info.channels())
    extras, in_chs = nn.ModuleList(), tap_channels[-1]
    for out_chs in extra_channels:
        extras.append(_extra_block(in_chs, int(out_chs), norm_layer))
        in_chs = int(out_chs)
    _normal_init(extras)
    in_channels = tap_channels + [int(c) for c in extra_channels]
    anchor_generator = AnchorGenerator(aspect_ratios, min_ratio, max_ratio, anchor_scales, num_levels=len(in_channels),
                                       reduce_lowest_level=reduce_lowest_level, lowest_scale=lowest_scale)
    head = SSDLiteHead(in_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer,
                       cls_bias_prior=0.01 if cls_loss == "focal" else None)
    box_coder = BoxCoder(box_coder_weights)
    loss = DetectionLoss(box_coder, iou_threshold, neg_pos_ratio, box_loss, cls_loss, bbox_weight=bbox_weight)
    presets = {
        "eval": replace(EVAL_POSTPROCESS, **(eval_postprocess or {})),
        "deploy": replace(DEPLOY_POSTPROCESS, **(deploy_postprocess or {})),
    }
    hw = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    return SSDLite(backbone, extras, head, anchor_generator, box_coder, loss, presets, postprocess_mode,
                   score_fn="sigmoid" if cls_loss == "focal" else "softmax", image_size=hw)


class TorchvisionDetector(nn.Module):
    """A torchvision detector behind this package's interface: ``(N, 3, H, W)`` normalized tensors in,
    losses (training) or one ``{"boxes", "scores", "labels"}`` per image (eval) out.

    The wrapped model's own resize and normalization are turned into identities (fixed size = the
    input size, mean 0, std 1), so that it sees exactly the tensors this package's pipeline produces.
    """

    def __init__(self, model: nn.Module, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.image_size = tuple(image_size)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        out = self.model(list(images), targets)
        if self.training:
            return out
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"]} for d in out]


def build_torchvision_ssdlite(num_classes: int, size: int = 320, width_mult: float = 1.0,
                              eval_postprocess: dict | None = None, **not_applicable) -> TorchvisionDetector:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` (no pretrained weights) for side-by-side comparisons.

    ``width_mult`` scales its MobileNetV3 backbone. ``eval_postprocess`` fields map onto torchvision's
    ``score_thresh``, ``nms_thresh``, ``detections_per_img`` and ``topk_candidates`` (which torchvision
    applies per class). Options of ``build_ssdlite`` that torchvision's model does not have (anchors,
    losses, ...; a task config may set them for both) are ignored, with a warning, rather than passed
    on: torchvision's MobileNetV3 would swallow them silently.
    """
    import logging

    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    if not_applicable:
        logging.getLogger(__name__).warning(
            "build_torchvision_ssdlite: ignoring SSDLite-MobileNetV2 options torchvision's model does not have: %s",
            sorted(not_applicable))
    pp = asdict(replace(EVAL_POSTPROCESS, **(eval_postprocess or {})))
    pp["topk_candidates"] = min(pp["topk_candidates"], 300)  # per class in torchvision
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        width_mult=width_mult, **pp,
    )
    model.transform.fixed_size = (size, size)
    model.transform.min_size, model.transform.max_size = (size,), size
    return TorchvisionDetector(model, num_classes, (size, size))
