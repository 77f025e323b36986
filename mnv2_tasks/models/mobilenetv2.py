"""MobileNetV2 (Sandler et al., 2018) as a classifier and as a multi-scale backbone.

The network is the paper's table of ``[t, c, n, s]`` rows (expansion, channels, repeats,
stride). Parameter names follow timm's flat ``InvertedResidual`` (``conv_pw, bn1, conv_dw,
bn2, conv_pwl, bn3``); ``pretrained.py`` maps torchvision's and timm's names onto them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from .contract import TaskNet
from .features import FeatureInfo
from .results import classification_result

__all__ = ["MobileNetV2", "MobileNetV2Backbone", "SamePad", "PADDINGS", "make_divisible", "INVERTED_RESIDUAL_SETTING", "TAPS"]

# t: expansion, c: output channels (at width 1.0), n: repeats, s: stride of the first repeat.
INVERTED_RESIDUAL_SETTING: list[list[int]] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]

# Feature taps, by index. They are recorded while the network is built (``_MobileNetV2Trunk.taps``),
# so a custom ``inverted_residual_setting`` keeps correct taps: 0-4 are the last block of each
# stride 2, 4, 8, 16, 32 (timm's default taps), 5 is the 1x1 head (1280 channels), 6 is the
# expansion output of the first stride-32 block (96 -> 576 -> 160), still at stride 16: the
# layer the paper's SSDLite attaches its first prediction layer to; 7 is the same one stage earlier,
# the first stride-16 block's expansion (32 -> 192 -> 64) at stride 8. For the paper's table:
TAPS: dict[int, str] = {
    0: "blocks.0",
    1: "blocks.2",
    2: "blocks.5",
    3: "blocks.12",
    4: "blocks.16",
    5: "head",
    6: "blocks.13.expansion",
    7: "blocks.6.expansion",
}
_TAP_ALIASES = {"expansion": 6, "head": 5, "expansion8": 7}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never going more than 10% below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


PADDINGS = ("symmetric", "tf_same")


class SamePad(nn.Module):
    """TensorFlow's ``same`` padding before a strided convolution: the total ``(ceil(in / s) - 1) * s + k - in`` split
    with the extra pixel after (bottom, right), where PyTorch's symmetric padding puts one before and one after.
    Networks trained in TensorFlow/Keras (their ImageNet MobileNetV2 weights) need it to reproduce their outputs."""

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def _total(self, size: int) -> int:
        return max((-(-size // self.stride) - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1 - size, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self._total(x.shape[-2]), self._total(x.shape[-1])
        return nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _pad_for(kernel_size: int, stride: int, dilation: int, padding: str) -> tuple[nn.Module, int]:
    """The module before a convolution and the convolution's own padding, for ``padding`` (``PADDINGS``)."""
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: choose one of {PADDINGS} (tf_same: Keras/TensorFlow weights)")
    if padding == "tf_same" and stride > 1:  # at stride 1 (odd kernels) TensorFlow's same is symmetric
        return SamePad(kernel_size, stride, dilation), 0
    return nn.Identity(), (kernel_size - 1) // 2 * dilation


class ConvBNAct(nn.Module):
    """Conv2d + BatchNorm + activation (None for linear), padding derived from kernel and dilation
    (``padding="tf_same"``: TensorFlow's, ``SamePad``)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU6,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.pad, conv_padding = _pad_for(kernel_size, stride, dilation, padding)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, conv_padding, dilation, groups, bias=False)
        self.bn = norm_layer(out_chs)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class InvertedResidual(nn.Module):
    """1x1 expansion -> 3x3 depthwise -> 1x1 linear projection, with a skip when shapes match.

    ``expansion`` is an ``nn.Identity`` after the expansion activation so that the
    expansion output can be tapped by name (``blocks.13.expansion``) and by forward hooks.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        mid_chs = int(round(in_chs * expand_ratio))
        self.has_skip = stride == 1 and in_chs == out_chs
        self.out_chs = out_chs
        self.mid_chs = mid_chs
        if expand_ratio != 1:
            self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
            self.bn1 = norm_layer(mid_chs)
            self.act1 = act_layer(inplace=True)
        else:
            self.conv_pw, self.bn1, self.act1 = nn.Identity(), nn.Identity(), nn.Identity()
        self.expansion = nn.Identity()
        self.pad_dw, dw_padding = _pad_for(3, stride, dilation, padding)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride, dw_padding, dilation, groups=mid_chs, bias=False)
        self.bn2 = norm_layer(mid_chs)
        self.act2 = act_layer(inplace=True)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = norm_layer(out_chs)

    def forward_expansion(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_mid, H, W): the expansion output, before the depthwise conv."""
        return self.expansion(self.act1(self.bn1(self.conv_pw(x))))

    def forward_rest(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Depthwise + projection from the expansion output ``e``, plus the skip from ``x``."""
        out = self.bn3(self.conv_pwl(self.act2(self.bn2(self.conv_dw(self.pad_dw(e))))))
        return out + x if self.has_skip else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rest(x, self.forward_expansion(x))


class _MobileNetV2Trunk(nn.Module):
    """Stem, the 17 inverted-residual blocks and the 1x1 head, with per-tap bookkeeping."""

    def __init__(
        self,
        width_mult: float = 1.0,
        output_stride: int = 32,
        in_chans: int = 3,
        norm_layer: Callable[..., nn.Module] | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        inverted_residual_setting: Sequence[Sequence[int]] | None = None,
        round_nearest: int = 8,
        with_head: bool = True,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if not 0.1 <= width_mult <= 2.0:
            raise ValueError(f"width_mult={width_mult} is outside the supported range [0.1, 2.0] (the paper uses 0.35-1.4)")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        norm_layer = norm_layer or nn.BatchNorm2d
        setting = inverted_residual_setting or INVERTED_RESIDUAL_SETTING
        self.width_mult = width_mult
        self.output_stride = output_stride
        self.padding = padding  # symmetric (PyTorch's) | tf_same (TensorFlow's, for Keras weights: SamePad)

        stem_chs = make_divisible(32 * width_mult, round_nearest)
        self.head_chs = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        self.stem = ConvBNAct(in_chans, stem_chs, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer, padding=padding)

        # Strides beyond output_stride become dilation (TF DeepLab's rule): the block that
        # would pass output_stride keeps its current rate, the blocks after it multiply it.
        current_stride, rate, nominal = 2, 1, 2
        blocks: list[nn.Module] = []
        # the taps, recorded as the blocks are built: index -> {num_chs, reduction, module, index, position}
        self.taps: dict[int, dict] = {}
        in_chs, in_reduction = stem_chs, 2
        for t, c, n, s in setting:
            out_chs = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                nominal *= stride  # the stride without dilation: it names the stage (taps 0-4)
                if stride > 1 and current_stride >= output_stride:
                    block_stride, block_rate, rate = 1, rate, rate * stride
                else:
                    block_stride, block_rate = stride, rate
                    current_stride *= stride
                b = len(blocks)
                block = InvertedResidual(in_chs, out_chs, block_stride, t, block_rate, norm_layer, act_layer, padding)
                blocks.append(block)
                if nominal in (2, 4, 8, 16, 32):  # the last block of each stride so far: overwritten by later ones
                    self._record_tap(nominal.bit_length() - 2, f"blocks.{b}", out_chs, current_stride, (b, False))
                if nominal == 32 and 6 not in self.taps:  # the first stride-32 block's expansion, at its input's resolution
                    self._record_tap(6, f"blocks.{b}.expansion", block.mid_chs, in_reduction, (b, True))
                if nominal == 16 and 7 not in self.taps and t != 1:  # the same for the first stride-16 block
                    self._record_tap(7, f"blocks.{b}.expansion", block.mid_chs, in_reduction, (b, True))
                in_chs, in_reduction = out_chs, current_stride
        self.blocks = nn.Sequential(*blocks)
        self._record_tap(5, "head", self.head_chs, current_stride, (len(blocks), False))
        self.head = ConvBNAct(in_chs, self.head_chs, 1, norm_layer=norm_layer, act_layer=act_layer) if with_head else None

    def _record_tap(self, index: int, module: str, chs: int, reduction: int, position: tuple[int, bool]) -> None:
        self.taps[index] = {"num_chs": chs, "reduction": reduction, "module": module, "index": index, "position": position}

    def tap_info(self) -> list[dict]:
        """timm-style info of every tap this network has, by index (``num_chs``, ``reduction``, ``module``, ``index``)."""
        return [{k: v for k, v in self.taps[i].items() if k != "position"} for i in sorted(self.taps)]

    def _init_weights(self) -> None:
        # torchvision's initialisation, so that an untrained model behaves like theirs
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


class MobileNetV2(_MobileNetV2Trunk, TaskNet):
    """The paper's classification network: (N, 3, H, W) normalized images -> (N, num_classes) logits.

    At width 1.0 it has torchvision's 3,504,872 parameters and 300M MAdds at 224x224.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        in_chans: int = 3,
        norm_layer: Callable[..., nn.Module] | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        inverted_residual_setting: Sequence[Sequence[int]] | None = None,
        round_nearest: int = 8,
        padding: str = "symmetric",
    ) -> None:
        super().__init__(width_mult, 32, in_chans, norm_layer, act_layer, inverted_residual_setting, round_nearest,
                         padding=padding)
        self.num_classes = num_classes
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(self.head_chs, num_classes)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, head_chs, H/32, W/32)."""
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """(N, head_chs, h, w) -> (N, num_classes)."""
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- model contract (contract.TaskNet) -----------------------------------------------------
    task = "classification"
    frame_result = staticmethod(classification_result)
    export_formats = {"logits": ("logits",)}

    def backbone_parts(self) -> list[nn.Module]:
        return [self.stem, self.blocks, self.head]

    def pretrained_target(self) -> nn.Module:
        return self  # a weights file's classifier loads too when the class count matches

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self(images)}

    def train_outputs(self, raw: dict[str, torch.Tensor], images: torch.Tensor, targets=None) -> torch.Tensor:
        return raw["logits"]

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> torch.Tensor:
        return raw["logits"]  # (N, num_classes)

    def export_outputs(self, raw: dict[str, torch.Tensor], image_size, fmt: str) -> tuple[torch.Tensor, ...]:
        return (raw["logits"],)


class MobileNetV2Backbone(_MobileNetV2Trunk):
    """MobileNetV2 without classifier: (N, 3, H, W) -> list of feature maps, one per selected tap.

    ``out_indices`` picks taps from ``TAPS`` (ints, or the aliases ``"expansion"`` and
    ``"head"``); outputs come in network order, and ``feature_info`` describes them:
    at width 1.0 the default taps have channels [16, 24, 32, 96, 320] and reductions
    [2, 4, 8, 16, 32]. ``output_stride`` 16 or 8 turns the later strides into dilation,
    with the same weights. Layers after the deepest selected tap are not built.

    For torchvision's detectors: ``out_channels`` is the last tap's channel count (what
    ``FasterRCNN`` / ``RetinaNet`` / ``SSD`` read), and ``return_dict=True`` returns an
    ``OrderedDict`` of the maps named ``"0"``, ``"1"``, ... (``fpn.mobilenetv2_fpn_backbone`` builds
    a ``BackboneWithFPN`` on it).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        out_indices: Sequence[int | str] = (0, 1, 2, 3, 4),
        output_stride: int = 32,
        in_chans: int = 3,
        norm_layer: Callable[..., nn.Module] | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        inverted_residual_setting: Sequence[Sequence[int]] | None = None,
        round_nearest: int = 8,
        return_dict: bool = False,
        padding: str = "symmetric",
    ) -> None:
        requested = {_TAP_ALIASES.get(i, i) if isinstance(i, str) else int(i) for i in out_indices}
        if not requested or not requested <= set(TAPS):
            raise ValueError(f"out_indices {tuple(out_indices)} must be non-empty and within {sorted(TAPS)} ({TAPS})")
        super().__init__(
            width_mult, output_stride, in_chans, norm_layer, act_layer, inverted_residual_setting, round_nearest,
            with_head=5 in requested, padding=padding,
        )
        missing = sorted(requested - set(self.taps))
        if missing:
            raise ValueError(f"out_indices {missing}: this inverted_residual_setting has no such tap (it has {sorted(self.taps)})")
        # taps in network order; each is (block index, is_expansion), the head being block len(blocks)
        indices = sorted(requested, key=lambda i: (self.taps[i]["position"][0], 0 if self.taps[i]["position"][1] else 1))
        self.out_indices = tuple(indices)
        self.feature_info = FeatureInfo([{k: v for k, v in self.taps[i].items() if k != "position"} for i in indices])
        self._taps = [self.taps[i]["position"] for i in indices]
        self.out_channels = self.feature_info.channels(len(indices) - 1)
        self.return_dict = return_dict
        n_blocks = max(b + 1 for b, _ in self._taps)  # an expansion tap needs its block too
        if n_blocks < len(self.blocks) and 5 not in indices:
            self.blocks = self.blocks[:n_blocks]
        self._init_weights()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | OrderedDict[str, torch.Tensor]:
        x = self.stem(x)
        feats: list[torch.Tensor] = []
        taps = self._taps
        t = 0
        for b, block in enumerate(self.blocks):
            if t < len(taps) and taps[t] == (b, True):
                e = block.forward_expansion(x)
                feats.append(e)
                t += 1
                x = block.forward_rest(x, e)
            else:
                x = block(x)
            if t < len(taps) and taps[t] == (b, False):
                feats.append(x)
                t += 1
        if self.head is not None:
            feats.append(self.head(x))
        if self.return_dict:
            return OrderedDict((str(i), f) for i, f in enumerate(feats))
        return feats
