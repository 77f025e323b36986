"""SSDLite on MobileNetV2, as in the paper (Sandler et al., 2018, sec. 6.2).

Prediction layers sit on the expansion output of the first stride-32 block (576 channels at
stride 16, width 1.0) and on the 1280-channel stride-32 head, then on four extra layers of
512, 256, 256 and 128 channels (1x1 to half depth, 3x3 stride-2 depthwise, 1x1). Every
prediction head is depthwise-separable; activations are ReLU6; BatchNorm eps 1e-3, momentum 0.03.
At 81 classes and 320x320 it has the paper's 4.3M parameters and 0.8B MAdds.

Three tiers, as torchvision's detection models: private blocks, ``SSDLite`` which takes built
modules, and the keyword-only builder ``build_ssdlite``. ``SSDLite`` follows the model contract
(``contract.TaskNet``): ``deploy_forward(images) -> {"bbox_regression", "cls_logits"}`` is the
network alone; the loss, the decoding and NMS (``detection_postprocess.py``) and the exported
outputs read those raw outputs only.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from .anchors import AnchorGenerator, anchor_coverage
from .box_coder import BoxCoder
from .contract import TaskNet, image_hw
from .detection_loss import DetectionLoss
from .detection_postprocess import (
    DEPLOY_POSTPROCESS, EVAL_POSTPROCESS, PostprocessConfig, config_to_meta, pad_detections, select_detections,
    split_detections,
)
from .export_formats import FORMATS
from .results import detection_result
from .mobilenetv2 import ConvBNAct, MobileNetV2Backbone

# MobileNetV2Backbone's taps by name: stride8 is blocks.5's output, expansion8 blocks.6's expansion (both at stride 8)
TAP_INDEX = {"stride8": 2, "expansion8": 7, "expansion": 6, "head": 5}

__all__ = ["SSDLite", "SSDLiteHead", "build_ssdlite"]

# the paper's taps: block 13's expansion (stride 16) and the 1x1 head (stride 32); see mobilenetv2.TAPS
SSDLITE_TAPS = ("expansion", "head")
PAPER_EXTRA_CHANNELS = (512, 256, 256, 128)


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


class SSDLite(TaskNet):
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
        levels: which backbone outputs are prediction levels (default: all); a backbone shared with
            another head may tap more maps than the detector reads.
    """

    task = "detection"
    frame_result = staticmethod(detection_result)
    # nms: fixed-shape detections with NMS in the graph; decoded: boxes + per-class scores, for runtimes with their own NMS
    export_formats = {"nms": FORMATS["nms"], "decoded": FORMATS["decoded"]}

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
        levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = list(range(len(backbone.feature_info))) if levels is None else [int(i) for i in levels]
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
        return self.level_features(self.backbone(images))

    def level_features(self, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The backbone's outputs -> one feature map per level: the level taps, then every extra layer."""
        feats = [taps[i] for i in self.levels]
        x = feats[-1]
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> ``bbox_regression`` (N, A, 4) offsets, ``cls_logits`` (N, A, num_classes); A = anchors(H, W)."""
        return self.head_outputs(self.backbone(images))

    def head_outputs(self, taps: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The backbone's outputs -> the detector's raw outputs (``deploy_forward`` without the backbone)."""
        reg, cls = self.head(self.level_features(taps))
        return {"bbox_regression": reg, "cls_logits": cls}

    def anchors(self, image_size, device: torch.device | str = "cpu") -> torch.Tensor:
        """(A, 4) xyxy anchors in pixels for an input of ``image_size = (H, W)``; no forward pass."""
        hw = image_hw(image_size)
        return self.anchor_generator.grid_anchors(self.grid_sizes(hw), hw).to(device)

    def grid_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map sizes per level, from the backbone's declared reductions (3x3/s2 convs: ceil)."""
        h, w = int(image_size[0]), int(image_size[1])
        sizes = []
        for r in (self.backbone.feature_info.reduction(i) for i in self.levels):
            gh, gw = h, w
            for _ in range(int(r).bit_length() - 1):  # each stride-2 layer: ceil(x / 2)
                gh, gw = (gh + 1) // 2, (gw + 1) // 2
            sizes.append((gh, gw))
        for _ in self.extras:
            gh, gw = (sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2
            sizes.append((gh, gw))
        return sizes

    # ---- training --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        """Training (with ``targets``): dict of losses. Eval: list of ``{"boxes" (K, 4) xyxy pixels, "scores", "labels"}``."""
        if self.training and targets is None:  # before the forward pass, not after it
            raise ValueError("SSDLite in training mode needs targets: a list of {'boxes', 'labels'} per image")
        return super().forward(images, targets)

    def train_outputs(self, raw: dict[str, torch.Tensor], images: torch.Tensor, targets: list[dict] | None = None) -> dict:
        """Loss dict; ``targets`` boxes in input pixels, labels in 1..C-1 (torchvision's training interface)."""
        if targets is None:
            raise ValueError("SSDLite's loss needs targets: a list of {'boxes', 'labels'} per image")
        reg, cls = raw["bbox_regression"], raw["cls_logits"]
        return self.loss(reg, cls, self.anchors(images.shape[-2:], reg.device), targets)

    def target_coverage(self, boxes: torch.Tensor, image_size) -> dict:
        """How many ``boxes`` (M, 4) have an anchor with IoU >= the loss's matching threshold (``anchors.anchor_coverage``)."""
        return anchor_coverage(self.anchors(image_size), boxes, self.loss.iou_threshold)

    # ---- inference: every step reads raw outputs, of this model or of its quantized graph -----
    def decode(self, raw: dict[str, torch.Tensor], image_size) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs -> (boxes (N, A, 4) xyxy input pixels, clipped; scores (N, A, C-1), class ``j`` = label ``j+1``)."""
        h, w = image_hw(image_size)
        reg = raw["bbox_regression"]
        boxes = self.box_coder.decode(reg.float(), self.anchors((h, w), reg.device))  # (N, A, 4)
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
        logits = raw["cls_logits"].float()
        scores = logits.softmax(-1)[..., 1:] if self.score_fn == "softmax" else logits[..., 1:].sigmoid()
        return boxes, scores

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> list[dict]:
        """Raw outputs -> one ``{"boxes" (K, 4) xyxy pixels, "scores", "labels"}`` per image."""
        boxes, scores = self.decode(raw, image_size)
        return split_detections(select_detections(boxes, scores, self.postprocess_cfg), boxes.shape[0])

    def export_outputs(self, raw: dict[str, torch.Tensor], image_size, fmt: str) -> tuple[torch.Tensor, ...]:
        """``nms``: padded ``boxes (N, D, 4)``, ``scores``, ``labels``, ``num_detections``; ``decoded``: ``boxes``, ``scores``."""
        boxes, scores = self.decode(raw, image_size)
        if fmt == "decoded":
            return boxes, scores
        flat = select_detections(boxes, scores, self.postprocess_cfg)
        return pad_detections(flat, boxes.shape[0], self.postprocess_cfg.detections_per_img)

    def export_metadata(self) -> dict[str, str]:
        return {"postprocess_mode": self.postprocess_mode, "score_fn": self.score_fn, **config_to_meta(self.postprocess_cfg)}


def build_ssdlite(num_classes: int, width_mult: float = 1.0, size: int | Sequence[int] = 320, **kwargs) -> SSDLite:
    """SSDLite-MobileNetV2 (keyword options: ``ssdlite_parts``). ``num_classes`` counts the background
    (COCO: 81 contiguous, 91 original ids). Backbone weights and freezing: ``TaskModule``'s
    ``pretrained`` and ``freeze_backbone`` (or ``load_pretrained(model.backbone, path)``)."""
    return SSDLite(**ssdlite_parts(num_classes, width_mult, size, **kwargs))


def ssdlite_parts(
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
    empty_image_negatives: float | None = None,
    ignore_crowd: bool = True,
    box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    eval_postprocess: dict | None = None,
    deploy_postprocess: dict | None = None,
    postprocess_mode: str = "eval",
    bn_eps: float = 1e-3,
    padding: str = "symmetric",
    bn_momentum: float = 0.03,
    extra_taps: Sequence[int | str] = (),
    stride8_level: bool = False,
    stride8_tap: str = "stride8",
    scale_extras: bool = False,
    inverted_residual_setting: Sequence[Sequence[int]] | None = None,
) -> dict:
    """The built parts of an SSDLite-MobileNetV2, as keyword arguments of ``SSDLite`` (or of a network
    that extends it, like the multi-task one; ``extra_taps``: backbone taps for its other heads).

    ``size`` is the nominal input (int or (H, W)); anchors follow any input size. Anchors: per-level
    ``aspect_ratios`` (or one list for all) with scales from ``min_ratio`` to ``max_ratio`` or explicit
    ``anchor_scales`` (levels + 1 values); ``reduce_lowest_level`` gives the first level 3 boxes
    (``lowest_scale`` square + one ratio pair), as the paper's TF configuration does (6 elsewhere). ``eval_postprocess`` / ``deploy_postprocess`` override fields
    of ``EVAL_POSTPROCESS`` / ``DEPLOY_POSTPROCESS``. ``stride8_level``: one more prediction level,
    first, on a stride-8 tap, for small objects (give it small anchors: ``min_ratio``): ``stride8_tap``
    ``"stride8"`` is ``blocks.5``'s output (32 channels at width 1.0), ``"expansion8"`` the expansion
    layer of ``blocks.6`` (192 channels), as the paper's first level reads block 13's expansion.
    ``scale_extras``: the extra layers' channels scale with ``width_mult`` (at least 16), as torchvision's
    SSDLite scales them; the paper (width 1.0) does not say. ``inverted_residual_setting``: the backbone's
    ``[t, c, n, s]`` table (``None``: the paper's; the taps follow any table).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
    if stride8_tap not in ("stride8", "expansion8"):
        raise ValueError(f"stride8_tap must be 'stride8' (blocks.5's output) or 'expansion8' (blocks.6's expansion), got {stride8_tap!r}")
    taps = ((stride8_tap,) if stride8_level else ()) + SSDLITE_TAPS
    backbone = MobileNetV2Backbone(width_mult, out_indices=tuple(dict.fromkeys((*extra_taps, *(TAP_INDEX[t] for t in taps)))),
                                   norm_layer=norm_layer, padding=padding, inverted_residual_setting=inverted_residual_setting)
    # the detector's levels among the backbone's outputs (which come in network order)
    levels = [backbone.out_indices.index(TAP_INDEX[t]) for t in taps]
    tap_channels = [backbone.feature_info.channels(i) for i in levels]
    if scale_extras:
        extra_channels = [max(16, int(int(c) * width_mult)) for c in extra_channels]
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
    loss = DetectionLoss(box_coder, iou_threshold, neg_pos_ratio, box_loss, cls_loss, bbox_weight=bbox_weight,
                         empty_image_negatives=empty_image_negatives, ignore_crowd=ignore_crowd)
    presets = {
        "eval": replace(EVAL_POSTPROCESS, **(eval_postprocess or {})),
        "deploy": replace(DEPLOY_POSTPROCESS, **(deploy_postprocess or {})),
    }
    hw = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    return dict(backbone=backbone, extras=extras, head=head, anchor_generator=anchor_generator, box_coder=box_coder,
                loss=loss, postprocess=presets, postprocess_mode=postprocess_mode,
                score_fn="sigmoid" if cls_loss == "focal" else "softmax", image_size=hw, levels=levels)
