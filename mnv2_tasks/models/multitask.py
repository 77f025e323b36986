"""One trunk, two heads: SSDLite detection and DeepLabV3-lite segmentation on one MobileNetV2 pass.

The backbone runs once per image; both heads read its taps:

- **Output stride 32, the paper's SSDLite taps.** The detector needs stride-16 and stride-32 maps
  (the expansion of block 13 and the 1x1 head), so the trunk is not dilated: the detector is
  exactly the single-task SSDLite, and the embedded pretrained backbone fits it unchanged.
- **Segmentation on the stride-16 expansion tap, refined at stride 4.** The expansion output of
  block 13 (576 channels at width 1.0, 6x the 96-channel block output) is the richest map at
  stride 16 and is computed for the detector anyway, so the lite head (1x1 + image pooling, no
  ASPP: the paper's mobile setting) reads it for free. Stride 16 alone is coarse (10x10 at
  160 px), so a DeepLabV3+ decoder adds the stride-4 tap (block 2, 24 channels): the only extra
  backbone output, and a cheap one. Dilating the trunk to stride 8 instead would make the shared
  trunk, and so the detector, about twice as expensive.

Model contract: ``task = "multitask"``; ``deploy_forward`` returns the detector's raw outputs and
the segmentation logits ``seg_out`` (N, K, H, W) in one dict; ``train_outputs`` gives
``{"detection": <SSDLite loss dict>, "segmentation": {"out": logits}}`` (the task module weighs and
adds the segmentation loss); ``postprocess`` gives ``{"detections": [...], "segmentation": logits}``.
Exported files have both output groups in one graph (``nms+logits`` or ``nms+argmax``).
Segmentation classes are the detector's labels (0 = background, 1..K the categories).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .deeplabv3 import ASPPHead, DeepLabV3PlusDecoder, init_head
from .export_formats import FORMATS
from .ssdlite import SSDLite, ssdlite_parts
from .results import multitask_result

__all__ = ["MultiTaskNet", "build_multitask"]

LOW_TAP = 1  # blocks.2: stride 4, the decoder's low-level input
SEG_TAP = 6  # blocks.13's expansion: stride 16, also the detector's first level


class MultiTaskNet(SSDLite):
    """SSDLite plus a segmentation head on the same backbone outputs (see the module docstring).

    Args (besides ``SSDLite``'s): ``seg_head`` (``ASPPHead``), ``seg_decoder``
    (``DeepLabV3PlusDecoder``), ``seg_classifier`` (1x1 conv to the classes), and the indices of
    the backbone outputs they read: ``seg_idx`` (head input) and ``low_idx`` (decoder input).
    """

    task = "multitask"
    frame_result = staticmethod(multitask_result)
    export_formats = {f: FORMATS[f] for f in ("nms+logits", "nms+argmax", "decoded+logits", "decoded+argmax")}

    def __init__(self, *, seg_head: nn.Module, seg_decoder: nn.Module, seg_classifier: nn.Conv2d, seg_idx: int,
                 low_idx: int, **ssdlite_kwargs) -> None:
        super().__init__(**ssdlite_kwargs)
        self.seg_head, self.seg_decoder, self.seg_classifier = seg_head, seg_decoder, seg_classifier
        self.seg_idx, self.low_idx = seg_idx, low_idx
        if seg_classifier.out_channels != self.num_classes:
            raise ValueError(f"the segmentation classes ({seg_classifier.out_channels}) must be the detector's labels "
                             f"(num_classes={self.num_classes}, background included)")

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = self.backbone(images)  # once, for both heads
        raw = self.head_outputs(taps)  # bbox_regression (N, A, 4), cls_logits (N, A, C)
        y = self.seg_decoder(self.seg_head(taps[self.seg_idx]), taps[self.low_idx])  # (N, C_dec, H/4, W/4)
        raw["seg_out"] = F.interpolate(self.seg_classifier(y), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return raw

    def train_outputs(self, raw: dict[str, torch.Tensor], images: torch.Tensor, targets: list[dict] | None = None) -> dict:
        """``{"detection": loss dict, "segmentation": {"out": (N, K, H, W)}}``; ``targets``: the detection targets."""
        return {"detection": super().train_outputs(raw, images, targets), "segmentation": {"out": raw["seg_out"]}}

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> dict[str, Any]:
        return {"detections": super().postprocess(raw, image_size), "segmentation": raw["seg_out"]}

    def export_outputs(self, raw: dict[str, torch.Tensor], image_size, fmt: str) -> tuple[torch.Tensor, ...]:
        det_fmt, seg_fmt = fmt.split("+")
        seg = raw["seg_out"].argmax(1) if seg_fmt == "argmax" else raw["seg_out"]
        return (*super().export_outputs(raw, image_size, det_fmt), seg)


def build_multitask(
    num_classes: int,
    width_mult: float = 1.0,
    size: int | Sequence[int] = 320,
    *,
    seg_head_chs: int = 128,
    seg_dropout: float = 0.1,
    seg_low_chs: int = 48,
    **ssdlite_options,
) -> MultiTaskNet:
    """SSDLite-MobileNetV2 and a DeepLabV3+-lite head on one backbone. ``num_classes`` counts the
    background and is shared by both heads; ``ssdlite_options`` are ``ssdlite_parts``' keywords."""
    parts = ssdlite_parts(num_classes, width_mult, size, extra_taps=(LOW_TAP,), **ssdlite_options)
    order = list(parts["backbone"].out_indices)
    info = parts["backbone"].feature_info
    seg_idx, low_idx = order.index(SEG_TAP), order.index(LOW_TAP)
    head = ASPPHead(info.channels(seg_idx), seg_head_chs, rates=(), dropout=seg_dropout)
    decoder = DeepLabV3PlusDecoder(seg_head_chs, info.channels(low_idx), seg_low_chs, seg_head_chs)
    classifier = nn.Conv2d(seg_head_chs, num_classes, 1)
    init_head([head, decoder])
    nn.init.normal_(classifier.weight, std=0.01)  # small logits at the start (as the single-task segmenter)
    nn.init.zeros_(classifier.bias)
    return MultiTaskNet(seg_head=head, seg_decoder=decoder, seg_classifier=classifier, seg_idx=seg_idx,
                        low_idx=low_idx, **parts)
