"""DeepLabV3 on MobileNetV2 (Sandler et al., 2018, section 6.3), the paper's mobile segmentation model.

The head sits on the 320-channel map of a ``MobileNetV2Backbone`` dilated to the output
stride. ``aspp=False`` is the paper's "lite" head (Table 7, 75.32 mIoU on VOC): a 1x1 branch and
an image-pooling branch, concatenated, projected, classified. ``aspp=True`` adds DeepLabV3's
three 3x3 atrous branches, with rates that follow the output stride (6/12/18 at 16, 12/24/36
at 8). Optional: a DeepLabV3+ decoder on the stride-4 tap and an auxiliary FCN head on the
stride-16 96-channel tap, both off by default.

The image-pooling branch has no BatchNorm: a 1x1 map at batch size 1 has a single value per
channel, which training-mode BatchNorm rejects (torchvision's and mmseg's ASPP heads fail there,
and LR-ASPP drops the norm in its pooling branch for the same reason). Its 1x1 conv has a bias
instead. Global pooling is a mean over H and W and the pooled vector is broadcast back to the
feature map's size, read from the tensor: both export to ONNX with dynamic batch and size.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .contract import TaskNet
from .export_formats import FORMATS
from .results import segmentation_result
from .mobilenetv2 import ConvBNAct, MobileNetV2Backbone

__all__ = ["DeepLabV3", "ASPPHead", "DeepLabV3PlusDecoder", "FCNAuxHead", "build_deeplabv3", "aspp_rates"]

# tap indices of MobileNetV2Backbone (see TAPS in mobilenetv2.py)
_TAP_LOW = 1  # blocks.2: 24 channels at stride 4, the DeepLabV3+ decoder's input
_TAP_AUX = 3  # blocks.12: 96 channels at stride 16 (stride 8 at OS8)
_TAP_HIGH = 4  # blocks.16: 320 channels, the head's input


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLabV3's atrous rates: (6, 12, 18) at output stride 16, doubled at 8, halved at 32."""
    return tuple(r * 16 // output_stride for r in (6, 12, 18))  # type: ignore[return-value]


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1,
                  norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> ConvBNAct:
    return ConvBNAct(in_chs, out_chs, kernel_size, dilation=dilation, groups=groups, norm_layer=norm_layer, act_layer=nn.ReLU)


# checkpoints written before the head's conv blocks were ConvBNAct named their parts 0 (conv) and 1 (norm)
_OLD_CONV_BN_KEY = re.compile(r"^(?!backbone\.)(.*)\.([01])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _rename_old_keys(module, state_dict, prefix, *args) -> None:
    own = set(module.state_dict())
    for key in [k for k in state_dict if k.startswith(prefix)]:
        m = _OLD_CONV_BN_KEY.match(key[len(prefix):])
        if m and key[len(prefix):] not in own:
            new = f"{prefix}{m.group(1)}.{'conv' if m.group(2) == '0' else 'bn'}.{m.group(3)}"
            state_dict[new] = state_dict.pop(key)


class ImagePooling(nn.Module):
    """(N, C, H, W) -> (N, out_chs, H, W): global average, 1x1 conv (+ bias, no norm), ReLU, broadcast."""

    # litert-torch 0.10 lowers the broadcast to a BROADCAST_TO that LiteRT then fails to prepare ("Output shape must be
    # broadcastable from input shape"); a nearest upsampling converts, but would change every other runtime's graph
    deploy_refusals = {"litert": "LiteRT cannot prepare the image-pooling branch's broadcast (BROADCAST_TO) that "
                                 "litert-torch 0.10 writes for it"}

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.act(self.conv(x.mean(dim=(2, 3), keepdim=True)))  # (N, out_chs, 1, 1)
        # bilinear upsampling of a 1x1 map is a broadcast; expand to the size taken from x
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPPHead(nn.Module):
    """DeepLabV3's head without the classifier: (N, in_chs, h, w) -> (N, out_chs, h, w).

    Branches: a 1x1 conv, one 3x3 conv per atrous rate in ``rates`` (none for the lite head),
    and image pooling; concatenated, then projected by a 1x1 conv, followed by dropout.
    """

    def __init__(self, in_chs: int, out_chs: int = 256, rates: Sequence[int] = (), dropout: float = 0.1,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.rates = tuple(rates)
        branches = [_conv_bn_relu(in_chs, out_chs, 1, norm_layer=norm_layer)]
        branches += [_conv_bn_relu(in_chs, out_chs, 3, dilation=r, norm_layer=norm_layer) for r in self.rates]
        self.branches = nn.ModuleList(branches)
        self.pool = ImagePooling(in_chs, out_chs)
        self.project = _conv_bn_relu(out_chs * (len(branches) + 1), out_chs, 1, norm_layer=norm_layer)
        self.dropout = nn.Dropout(dropout)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches] + [self.pool(x)]  # each (N, out_chs, h, w)
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+'s decoder: head output (N, C, h, w) + stride-4 features (N, C_low, H/4, W/4) -> (N, out_chs, H/4, W/4).

    The low-level features are reduced to ``low_chs`` by a 1x1 conv; the head output is
    upsampled to their size; two depthwise-separable 3x3 convs refine the concatenation
    (separable, as DeepLab's MobileNet configurations use).
    """

    def __init__(self, head_chs: int, low_in_chs: int, low_chs: int = 48, out_chs: int = 256,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(low_in_chs, low_chs, 1, norm_layer=norm_layer)
        in_chs = head_chs + low_chs
        self.refine = nn.Sequential(
            _conv_bn_relu(in_chs, in_chs, 3, groups=in_chs, norm_layer=norm_layer),
            _conv_bn_relu(in_chs, out_chs, 1, norm_layer=norm_layer),
            _conv_bn_relu(out_chs, out_chs, 3, groups=out_chs, norm_layer=norm_layer),
            _conv_bn_relu(out_chs, out_chs, 1, norm_layer=norm_layer),
        )
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(torch.cat([x, low], dim=1))


class FCNAuxHead(nn.Module):
    """Auxiliary classifier on an intermediate tap: (N, in_chs, h, w) -> (N, num_classes, h, w) logits."""

    def __init__(self, in_chs: int, num_classes: int, mid_chs: int = 128, dropout: float = 0.1,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.block = _conv_bn_relu(in_chs, mid_chs, 3, norm_layer=norm_layer)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(mid_chs, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(x)))


class DeepLabV3(TaskNet):
    """(N, 3, H, W) normalized images -> (N, num_classes, H, W) logits at the input resolution.

    ``backbone`` returns a list of feature maps; ``high_idx`` picks the head's input and
    ``low_idx`` / ``aux_idx`` the decoder's and the auxiliary head's (when those are given).
    ``forward`` always returns the logits tensor (what evaluation uses); ``forward_with_aux``
    also returns the auxiliary logits. Model contract: ``deploy_forward`` gives ``{"out"}``, plus
    ``"aux"`` in training mode (the training loss reads it; eval and export skip the aux head).
    """

    task = "segmentation"
    frame_result = staticmethod(segmentation_result)
    export_formats = {"logits": FORMATS["logits"], "argmax": FORMATS["argmax"]}
    capture_dynamic_hw = True  # trains on crops, evaluates on whole images

    def __init__(self, backbone: nn.Module, head: nn.Module, classifier: nn.Module, high_idx: int,
                 decoder: nn.Module | None = None, low_idx: int | None = None,
                 aux_head: nn.Module | None = None, aux_idx: int | None = None) -> None:
        super().__init__()
        if (decoder is None) != (low_idx is None) or (aux_head is None) != (aux_idx is None):
            raise ValueError("decoder needs low_idx and aux_head needs aux_idx (and the other way round)")
        self.backbone = backbone
        self.head = head
        self.decoder = decoder
        self.classifier = classifier
        self.aux_head = aux_head
        self.high_idx, self.low_idx, self.aux_idx = high_idx, low_idx, aux_idx
        self.num_classes = classifier.out_channels
        self.register_load_state_dict_pre_hook(_rename_old_keys)

    def _forward(self, x: torch.Tensor, with_aux: bool) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.backbone(x)
        y = self.head(feats[self.high_idx])  # (N, C_head, H/os, W/os)
        if self.decoder is not None:
            y = self.decoder(y, feats[self.low_idx])  # (N, C_dec, H/4, W/4)
        y = self.classifier(y)  # (N, K, h, w)
        out = {"out": F.interpolate(y, size=size, mode="bilinear", align_corners=False)}  # (N, K, H, W)
        if with_aux and self.aux_head is not None:
            a = self.aux_head(feats[self.aux_idx])
            out["aux"] = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, with_aux=False)["out"]

    def forward_with_aux(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"out": (N, K, H, W)}``, plus ``"aux": (N, K, H, W)`` when the model has an auxiliary head."""
        return self._forward(x, with_aux=True)

    # ---- model contract -------------------------------------------------------------------
    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._forward(images, with_aux=self.training)

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> torch.Tensor:
        return raw["out"]  # (N, K, H, W) logits

    def export_outputs(self, raw: dict[str, torch.Tensor], image_size, fmt: str) -> tuple[torch.Tensor, ...]:
        """``logits``: (N, K, H, W); ``argmax``: the (N, H, W) int64 mask."""
        return (raw["out"].argmax(1),) if fmt == "argmax" else (raw["out"],)


def init_head(modules: Sequence[nn.Module]) -> None:
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def build_deeplabv3(
    num_classes: int,
    width_mult: float = 1.0,
    output_stride: int = 16,
    aspp: bool = False,
    *,
    head_chs: int = 256,
    dropout: float = 0.1,
    decoder: bool = False,
    decoder_low_chs: int = 48,
    aux: bool = False,
    pretrained_backbone: str | None = None,
    padding: str = "symmetric",
    inverted_residual_setting: Sequence[Sequence[int]] | None = None,
) -> DeepLabV3:
    """DeepLabV3 on a MobileNetV2 backbone of ``width_mult``, dilated to ``output_stride`` (8, 16 or 32).

    ``aspp=False`` is the paper's lite head (2.11M parameters at 21 classes and width 1.0);
    ``aspp=True`` adds the 3x3 atrous branches (rates from ``aspp_rates``). ``decoder`` adds a
    DeepLabV3+ decoder on the stride-4 tap, ``aux`` an auxiliary head for training.
    ``pretrained_backbone`` is a MobileNetV2 weights file for ``load_pretrained``.
    ``inverted_residual_setting``: the backbone's ``[t, c, n, s]`` table (``None``: the paper's).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    taps = [_TAP_HIGH] + ([_TAP_LOW] if decoder else []) + ([_TAP_AUX] if aux else [])
    backbone = MobileNetV2Backbone(width_mult, out_indices=taps, output_stride=output_stride, padding=padding,
                                   inverted_residual_setting=inverted_residual_setting)
    if pretrained_backbone:
        from .pretrained import load_pretrained

        load_pretrained(backbone, pretrained_backbone)
    order = list(backbone.out_indices)  # taps in network order
    info = backbone.feature_info
    high_idx = order.index(_TAP_HIGH)
    head = ASPPHead(info.channels(high_idx), head_chs, aspp_rates(output_stride) if aspp else (), dropout)
    dec, low_idx = None, None
    if decoder:
        low_idx = order.index(_TAP_LOW)
        dec = DeepLabV3PlusDecoder(head_chs, info.channels(low_idx), decoder_low_chs, head_chs)
    aux_head, aux_idx = None, None
    if aux:
        aux_idx = order.index(_TAP_AUX)
        aux_head = FCNAuxHead(info.channels(aux_idx), num_classes)
    classifier = nn.Conv2d(head_chs, num_classes, 1)
    init_head([m for m in (head, dec, aux_head) if m is not None])
    # small logits at the start (mmseg's std 0.01): fan-out init of a K-channel conv gives
    # logits of std ~5 and an initial loss of several nats
    for conv in [classifier] + ([aux_head.classifier] if aux_head is not None else []):
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    return DeepLabV3(backbone, head, classifier, high_idx, dec, low_idx, aux_head, aux_idx)
