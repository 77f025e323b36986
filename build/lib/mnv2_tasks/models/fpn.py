"""MobileNetV2 as the backbone of torchvision's detectors: a ``BackboneWithFPN`` builder.

    from torchvision.models.detection import FasterRCNN, RetinaNet
    from mnv2_tasks.models.fpn import mobilenetv2_fpn_backbone

    model = FasterRCNN(mobilenetv2_fpn_backbone(width_mult=1.0), num_classes=91)
    model = RetinaNet(mobilenetv2_fpn_backbone(returned_taps=(2, 3, 4), extra_p6p7=True), num_classes=91)

Both with torchvision's default anchors, which expect five pyramid levels: Faster R-CNN's are
the taps at strides 4-32 plus a max-pooled level (the defaults here), RetinaNet's the taps at
strides 8-32 plus P6 and P7 (as ``retinanet_resnet50_fpn``).

For a single-map detector, ``MobileNetV2Backbone(out_indices=(4,), return_dict=True)`` has the
``out_channels`` torchvision reads as well.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from .mobilenetv2 import MobileNetV2Backbone

__all__ = ["MobileNetV2FPNBackbone", "mobilenetv2_fpn_backbone"]


class MobileNetV2FPNBackbone(nn.Module):
    """torchvision's ``BackboneWithFPN`` layout (``body``, ``fpn``, ``out_channels``) with a
    ``MobileNetV2Backbone`` body that returns its maps by name itself (no ``IntermediateLayerGetter``):
    images (N, 3, H, W) -> ``OrderedDict`` of ``out_channels``-channel maps, finest first."""

    def __init__(self, body: MobileNetV2Backbone, out_channels: int, extra_blocks: nn.Module | None = None) -> None:
        super().__init__()
        if not body.return_dict:
            raise ValueError("the body must return named maps: MobileNetV2Backbone(..., return_dict=True)")
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def mobilenetv2_fpn_backbone(
    width_mult: float = 1.0,
    returned_taps: Sequence[int | str] = (1, 2, 3, 4),
    out_channels: int = 256,
    extra_p6p7: bool = False,
    output_stride: int = 32,
    pretrained: str | None = None,
) -> MobileNetV2FPNBackbone:
    """A feature pyramid on the MobileNetV2 taps ``returned_taps`` (default: strides 4, 8, 16, 32).

    ``extra_p6p7``: RetinaNet's P6/P7 levels (``LastLevelP6P7`` on the FPN outputs) instead of
    Faster R-CNN's max-pooled level. ``pretrained``: a MobileNetV2 weights file for the body.
    """
    body = MobileNetV2Backbone(width_mult, out_indices=returned_taps, output_stride=output_stride, return_dict=True)
    if pretrained:
        from .pretrained import load_pretrained

        load_pretrained(body, pretrained)
    extra = LastLevelP6P7(out_channels, out_channels) if extra_p6p7 else LastLevelMaxPool()
    return MobileNetV2FPNBackbone(body, out_channels, extra)
