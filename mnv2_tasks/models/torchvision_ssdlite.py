"""torchvision's ``ssdlite320_mobilenet_v3_large`` behind the model contract, for side-by-side comparisons.

It trains and evaluates through the same ``DetectionModule``, data pipeline and metric code as
``SSDLite``: ``deploy_forward`` runs torchvision's backbone and head, ``train_outputs`` its own
matching and loss, ``postprocess`` its own decoding and NMS. Its input transform is an identity
(fixed size = the input size, mean 0, std 1), so it sees exactly the pipeline's tensors. It is a
training baseline only and declares no export format.

``build_torchvision_ssdlite_mnv2`` puts this package's MobileNetV2 backbone (the paper's taps: block
13's expansion and the 1x1 head) into the same torchvision SSDLite (its extra layers, head,
initialisation, anchors, matching and loss), so that a comparison can tell the backbone from the rest.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, replace
from functools import partial

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from .contract import TaskNet, image_hw
from .detection_postprocess import EVAL_POSTPROCESS
from .results import detection_result
from .mobilenetv2 import MobileNetV2Backbone

__all__ = ["TorchvisionDetector", "TorchvisionMobileNetV2Detector", "build_torchvision_ssdlite", "build_torchvision_ssdlite_mnv2"]


class TorchvisionDetector(TaskNet):
    """A torchvision SSD-family detector: ``(N, 3, H, W)`` normalized tensors in, losses (training) or
    one ``{"boxes", "scores", "labels"}`` per image (eval) out."""

    task = "detection"
    frame_result = staticmethod(detection_result)
    takes_mobilenetv2_weights = False  # its backbone is MobileNetV3

    def __init__(self, model: nn.Module, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.image_size = tuple(image_size)
        self._grids: dict[tuple[int, int], list[tuple[int, int]]] = {}  # input (H, W) -> feature-map sizes

    def backbone_parts(self) -> list[nn.Module]:
        return [self.model.backbone]

    def pretrained_target(self) -> nn.Module:
        raise ValueError("torchvision's SSDLite has a MobileNetV3 backbone: it cannot take MobileNetV2 weights")

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = list(self.model.backbone(images).values())
        self._grids[image_hw(images)] = [tuple(f.shape[-2:]) for f in feats]
        return self.model.head(feats)  # {"bbox_regression" (N, A, 4), "cls_logits" (N, A, C)}

    def _anchors(self, images: torch.Tensor) -> list[torch.Tensor]:
        hw = image_hw(images)
        maps = [images.new_empty((1, 1, h, w)) for h, w in self._grids[hw]]  # only shapes are read
        return self.model.anchor_generator(ImageList(images, [hw] * images.shape[0]), maps)

    def train_outputs(self, raw: dict[str, torch.Tensor], images: torch.Tensor, targets: list[dict] | None = None) -> dict:
        if targets is None:
            raise ValueError("the detector's loss needs targets: a list of {'boxes', 'labels'} per image")
        anchors = self._anchors(images)
        matched = []
        for a, t in zip(anchors, targets):  # torchvision's SSD.forward matching
            if t["boxes"].numel() == 0:
                matched.append(torch.full((a.size(0),), -1, dtype=torch.int64, device=a.device))
            else:
                matched.append(self.model.proposal_matcher(box_iou(t["boxes"], a)))
        return self.model.compute_loss(targets, raw, anchors, matched)

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> list[dict]:
        hw = image_hw(image_size)
        n = raw["cls_logits"].shape[0]
        images = raw["cls_logits"].new_empty((n, 3, *hw))
        dets = self.model.postprocess_detections(raw, self._anchors(images), [hw] * n)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"]} for d in dets]


class TorchvisionMobileNetV2Detector(TorchvisionDetector):
    """torchvision's SSDLite around this package's MobileNetV2 backbone, which takes MobileNetV2 weights."""

    takes_mobilenetv2_weights = True

    def backbone_parts(self) -> list[nn.Module]:
        return [self.model.backbone.body]

    def pretrained_target(self) -> nn.Module:
        return self.model.backbone.body


class _MobileNetV2Features(nn.Module):
    """torchvision's ``SSDLiteFeatureExtractorMobileNet`` over ``MobileNetV2Backbone``: the two paper taps,
    then torchvision's four extra blocks (512, 256, 256, 128 channels scaled by ``width_mult``, at least
    ``min_depth``, normal-initialised); returns the ``OrderedDict`` torchvision's ``SSD`` reads."""

    def __init__(self, width_mult: float, norm_layer, min_depth: int = 16) -> None:
        super().__init__()
        from torchvision.models.detection.ssdlite import _extra_block, _normal_init

        self.body = MobileNetV2Backbone(width_mult, out_indices=("expansion", "head"), norm_layer=norm_layer)
        depths = [max(min_depth, int(d * width_mult)) for d in (512, 256, 256, 128)]
        chans = [self.body.feature_info.channels()[-1], *depths]
        self.extra = nn.ModuleList(_extra_block(a, b, norm_layer) for a, b in zip(chans[:-1], chans[1:]))
        _normal_init(self.extra)
        self.out_channels = [*self.body.feature_info.channels(), *depths]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = list(self.body(x))
        out = feats[-1]
        for block in self.extra:
            out = block(out)
            feats.append(out)
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


def _postprocess_kwargs(eval_postprocess: dict | None) -> dict:
    pp = asdict(replace(EVAL_POSTPROCESS, **(eval_postprocess or {})))
    pp["topk_candidates"] = min(pp["topk_candidates"], 300)  # per class in torchvision
    return pp


def _warn_not_applicable(not_applicable: dict) -> None:
    if not_applicable:
        logging.getLogger(__name__).warning(
            "torchvision's SSDLite: ignoring SSDLite-MobileNetV2 options torchvision's model does not have: %s",
            sorted(not_applicable))


def _fixed_size(model: nn.Module, size: int) -> None:
    model.transform.fixed_size = (size, size)
    model.transform.min_size, model.transform.max_size = (size,), size


def build_torchvision_ssdlite_mnv2(num_classes: int, size: int = 320, width_mult: float = 1.0,
                                   eval_postprocess: dict | None = None, **not_applicable) -> TorchvisionMobileNetV2Detector:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` recipe (extra layers, ``SSDLiteHead``, its
    initialisation, ``DefaultBoxGenerator`` with min 0.2 / max 0.95, ``SSDMatcher`` at 0.5, smooth L1 +
    3:1 hard-negative cross-entropy, BatchNorm eps 1e-3 / momentum 0.03) on this package's
    ``MobileNetV2Backbone``. Weights of the backbone: ``model.pretrained`` / ``pretrain=embedded``."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    _warn_not_applicable(not_applicable)
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = _MobileNetV2Features(width_mult, norm_layer)
    anchor_generator = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(backbone.out_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer)
    model = SSD(backbone, anchor_generator, (size, size), num_classes, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
                head=head, **_postprocess_kwargs(eval_postprocess))
    _fixed_size(model, size)
    return TorchvisionMobileNetV2Detector(model, num_classes, (size, size))


def build_torchvision_ssdlite(num_classes: int, size: int = 320, width_mult: float = 1.0,
                              eval_postprocess: dict | None = None, **not_applicable) -> TorchvisionDetector:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` (no pretrained weights).

    ``width_mult`` scales its MobileNetV3 backbone. ``eval_postprocess`` fields map onto torchvision's
    ``score_thresh``, ``nms_thresh``, ``detections_per_img`` and ``topk_candidates`` (which torchvision
    applies per class). Options of ``build_ssdlite`` that torchvision's model does not have (anchors,
    losses, ...; a task config may set them for both) are ignored, with a warning, rather than passed
    on: torchvision's MobileNetV3 would swallow them silently.
    """
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    _warn_not_applicable(not_applicable)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        width_mult=width_mult, **_postprocess_kwargs(eval_postprocess),
    )
    _fixed_size(model, size)
    return TorchvisionDetector(model, num_classes, (size, size))
