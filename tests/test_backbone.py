"""The MobileNetV2 contracts: torchvision's architecture, feature taps, output stride, export."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mnv2_tasks.models import TAPS, MobileNetV2, MobileNetV2Backbone
from mnv2_tasks.benchmarks.common import count_madds, count_params

WIDTHS = [0.35, 0.5, 0.75, 1.0, 1.4]


@pytest.mark.parametrize("width", WIDTHS)
def test_parameter_count_matches_torchvision(width):
    ours = MobileNetV2(width_mult=width)
    ref = torchvision.models.mobilenet_v2(width_mult=width)
    assert count_params(ours) == count_params(ref)
    if width == 1.0:
        assert count_params(ours) == 3_504_872


def test_madds_at_224_is_the_papers_300m():
    madds = count_madds(MobileNetV2(), torch.randn(1, 3, 224, 224))
    assert 299e6 < madds < 302e6


def test_head_never_narrower_than_1280():
    assert MobileNetV2(width_mult=0.35).head_chs == 1280
    assert MobileNetV2(width_mult=1.4).head_chs == 1792


def test_default_taps_at_width_1():
    bb = MobileNetV2Backbone()
    assert bb.feature_info.channels() == [16, 24, 32, 96, 320]
    assert bb.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_ssdlite_taps():
    bb = MobileNetV2Backbone(out_indices=("expansion", "head"))
    assert bb.feature_info.channels() == [576, 1280]
    assert bb.feature_info.reduction() == [16, 32]
    feats = bb(torch.randn(1, 3, 320, 320))
    assert [tuple(f.shape[1:]) for f in feats] == [(576, 20, 20), (1280, 10, 10)]


def test_stride8_expansion_tap_is_the_expansion_of_block_6():
    """Tap 7 (``expansion8``) is blocks.6's 1x1 expansion output, at stride 8, before its strided depthwise conv."""
    torch.manual_seed(0)
    bb = MobileNetV2Backbone(width_mult=0.35, out_indices=("expansion8", 2)).eval()
    assert bb.feature_info.channels() == [16, 96] and bb.feature_info.reduction() == [8, 8]
    assert [i["module"] for i in bb.feature_info] == ["blocks.5", "blocks.6.expansion"]
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out5, exp6 = bb(x)
        assert torch.equal(exp6, bb.blocks[6].forward_expansion(out5))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_info_matches_outputs(width, output_stride):
    """timm's contract: every tap's channels and reduction agree with the tensor, reductions never decrease."""
    bb = MobileNetV2Backbone(width_mult=width, out_indices=tuple(TAPS), output_stride=output_stride).eval()
    h, w = 67, 93  # odd, non-square
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, h, w))
    assert len(feats) == len(bb.feature_info)
    reds = bb.feature_info.reduction()
    assert reds == sorted(reds) and max(reds) == output_stride
    for f, info in zip(feats, bb.feature_info):
        assert f.shape[1] == info["num_chs"]
        # 'same'-style padding: ceil division per stride-2 layer
        size = (h, w)
        for _ in range(info["reduction"].bit_length() - 1):
            size = tuple((s + 1) // 2 for s in size)
        assert tuple(f.shape[2:]) == size, info
        assert torch.isfinite(f).all()


def test_output_stride_keeps_weights():
    bb32 = MobileNetV2Backbone(out_indices=(4,), output_stride=32)
    bb8 = MobileNetV2Backbone(out_indices=(4,), output_stride=8)
    bb8.load_state_dict(bb32.state_dict())  # same tensors, same shapes
    dilated = [m.dilation for m in bb8.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert max(d[0] for d in dilated) == 4


def test_backbone_matches_classifier_features():
    """The backbone with the head tap is the classifier without its pooling and linear layer."""
    torch.manual_seed(0)
    clf = MobileNetV2(num_classes=10, width_mult=0.35)
    bb = MobileNetV2Backbone(width_mult=0.35, out_indices=(5,))
    missing, unexpected = bb.load_state_dict(clf.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"classifier.weight", "classifier.bias"}
    clf.train()
    bb.train()  # BatchNorm on batch statistics: outputs depend on the input
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(bb(x)[0], clf.forward_features(x))


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="output_stride"):
        MobileNetV2Backbone(output_stride=4)
    with pytest.raises(ValueError, match="out_indices"):
        MobileNetV2Backbone(out_indices=(9,))


def test_torch_export_with_dynamic_batch():
    net = MobileNetV2(num_classes=4, width_mult=0.35).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(net, (torch.randn(2, 3, 64, 64),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 64, 64)
    torch.testing.assert_close(ep.module()(x), net(x))


def test_taps_follow_a_custom_inverted_residual_setting():
    """Taps are recorded while the network is built: another table keeps correct channels and strides."""
    setting = [[1, 16, 1, 1], [4, 24, 1, 2], [4, 40, 2, 2], [4, 80, 2, 2], [6, 112, 1, 1], [6, 160, 2, 2]]
    for os_ in (32, 16):
        bb = MobileNetV2Backbone(1.0, out_indices=(0, 1, 2, 3, 4, "expansion", "head"), output_stride=os_,
                                 inverted_residual_setting=setting).eval()
        assert bb.feature_info.module_name() == ["blocks.0", "blocks.1", "blocks.3", "blocks.6", "blocks.7.expansion",
                                                 "blocks.8", "head"]
        with torch.no_grad():
            feats = bb(torch.randn(1, 3, 128, 128))
        for f, chs, red in zip(feats, bb.feature_info.channels(), bb.feature_info.reduction()):
            assert f.shape[1] == chs and 128 // f.shape[-1] == red
        assert bb.feature_info.channels()[4] == 112 * 6  # the expansion of the first stride-32 block
    short = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]  # no stride-16 or stride-32 stage
    with pytest.raises(ValueError, match=r"out_indices \[3\]: this inverted_residual_setting has no such tap"):
        MobileNetV2Backbone(1.0, out_indices=(2, 3), inverted_residual_setting=short)
