"""DeepLabV3 on MobileNetV2: sizes against the paper, output shapes, batch size 1, export."""

from __future__ import annotations

import pytest
import torch

from mnv2_tasks.benchmarks.common import count_madds, count_params
from mnv2_tasks.models.deeplabv3 import aspp_rates, build_deeplabv3


def test_sizes_match_the_paper_table7():
    # Table 7: 2.11M parameters without ASPP, 4.52M with it (21 classes, width 1.0, OS16)
    lite = build_deeplabv3(21)
    full = build_deeplabv3(21, aspp=True)
    assert count_params(lite) == 2_113_301
    assert count_params(full) == 4_523_285
    assert round(count_params(lite) / 1e6, 2) == 2.11 and round(count_params(full) / 1e6, 2) == 4.52
    # 2.75B MAdds: TF DeepLab's 513x513 crop (2.60B at 512x512); convolutions only
    assert count_madds(lite, torch.randn(1, 3, 513, 513)) / 1e9 == pytest.approx(2.75, abs=0.02)


def test_aspp_rates_follow_output_stride():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    m = build_deeplabv3(3, width_mult=0.35, output_stride=8, aspp=True)
    dilations = [b.conv.dilation[0] for b in m.head.branches]
    assert dilations == [1, 12, 24, 36]
    assert len(build_deeplabv3(3, width_mult=0.35).head.branches) == 1  # lite: the 1x1 branch only


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(65, 97), (33, 129), (100, 71)])
def test_logits_at_input_resolution(output_stride, size):
    m = build_deeplabv3(5, width_mult=0.35, output_stride=output_stride, head_chs=32).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, *size))
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kw", [dict(decoder=True), dict(aux=True), dict(decoder=True, aux=True, aspp=True)])
def test_decoder_and_aux_head(kw):
    m = build_deeplabv3(4, width_mult=0.35, head_chs=32, **kw).eval()
    x = torch.randn(1, 3, 67, 45)
    out = m.forward_with_aux(x)
    assert out["out"].shape == (1, 4, 67, 45)
    assert ("aux" in out) == kw.get("aux", False)
    if kw.get("aux"):
        assert out["aux"].shape == (1, 4, 67, 45)
    torch.testing.assert_close(m(x), out["out"])  # forward returns the main logits only
    assert (m.decoder is not None) == kw.get("decoder", False)


def test_trains_with_batch_size_one():
    m = build_deeplabv3(3, width_mult=0.35, head_chs=32, aspp=True, aux=True).train()
    out = m.forward_with_aux(torch.randn(1, 3, 64, 64))
    (out["out"].sum() + out["aux"].sum()).backward()
    assert m.head.pool.conv.weight.grad is not None


def test_export_with_dynamic_batch():
    m = build_deeplabv3(3, width_mult=0.35, head_chs=32, aspp=True).eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    ep = torch.export.export(m, (torch.randn(2, 3, 64, 96),), dynamic_shapes=({0: batch},))
    for n in (1, 3):
        x = torch.randn(n, 3, 64, 96)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride"):
        build_deeplabv3(3, width_mult=0.35, output_stride=4)
    with pytest.raises(ValueError, match="num_classes"):
        build_deeplabv3(0)


def test_checkpoints_with_the_old_conv_block_names_still_load():
    """The head's conv blocks were nn.Sequential (parts named 0 and 1) before they were ConvBNAct (conv, bn)."""
    import re

    torch.manual_seed(0)
    m = build_deeplabv3(5, width_mult=0.35, decoder=True, aux=True)
    old = {}
    for k, v in m.state_dict().items():
        if not k.startswith(("backbone.", "head.pool.")):  # the pooling branch's conv had no norm: named conv then too
            k = re.sub(r"\.conv\.(?=[a-z_]+$)", ".0.", re.sub(r"\.bn\.(?=[a-z_]+$)", ".1.", k))
        old[k] = v
    assert "head.project.0.weight" in old and "head.pool.0.weight" not in old  # the pooling conv kept its name
    fresh = build_deeplabv3(5, width_mult=0.35, decoder=True, aux=True)
    fresh.load_state_dict(old)
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
