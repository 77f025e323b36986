"""load_pretrained: torchvision and timm checkpoints give the source model's outputs; bad files are explained."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from mnv2_tasks.models import CheckpointError, MobileNetV2, MobileNetV2Backbone, load_pretrained


def _randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that eval-mode outputs depend on every loaded tensor."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


@pytest.mark.parametrize("width", [0.35, 1.0])
def test_torchvision_parity(tmp_path, width):
    ref = torchvision.models.mobilenet_v2(width_mult=width, num_classes=1000)
    _randomize_bn(ref)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = MobileNetV2(width_mult=width)
    report = load_pretrained(ours, tmp_path / "tv.pth")
    assert report.source_format == "torchvision" and not report.skipped and not report.missing
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("name,width", [("mobilenetv2_035", 0.35), ("mobilenetv2_100", 1.0)])
def test_timm_parity_classifier_and_features(tmp_path, name, width):
    ref = timm.create_model(name, pretrained=False)
    _randomize_bn(ref)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = MobileNetV2(width_mult=width)
    load_pretrained(ours, tmp_path / "timm.pth")
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max() <= 1e-5
    # the backbone against timm's features_only model: same taps, same values
    feats_ref = timm.create_model(name, pretrained=False, features_only=True)
    feats_ref.load_state_dict(ref.state_dict(), strict=False)
    bb = MobileNetV2Backbone(width_mult=width)
    report = load_pretrained(bb, tmp_path / "timm.pth")
    assert "classifier.weight" in report.skipped and "conv_head.weight" in report.skipped
    assert bb.feature_info.channels() == feats_ref.feature_info.channels()
    assert bb.feature_info.reduction() == feats_ref.feature_info.reduction()
    with torch.no_grad():
        for a, b in zip(bb.eval()(x), feats_ref.eval()(x)):
            assert (a - b).abs().max() <= 1e-5


def test_other_num_classes_skips_classifier(tmp_path):
    torch.save(torchvision.models.mobilenet_v2(num_classes=1000).state_dict(), tmp_path / "tv.pth")
    ours = MobileNetV2(num_classes=4, width_mult=1.0)
    report = load_pretrained(ours, tmp_path / "tv.pth")
    assert set(report.skipped) == {"classifier.1.weight", "classifier.1.bias"}
    assert "other num_classes" in report.skipped["classifier.1.weight"]
    assert report.missing == ["classifier.weight", "classifier.bias"]


def test_package_checkpoint_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = MobileNetV2(num_classes=4, width_mult=0.35)
    _randomize_bn(src)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    # a Lightning-style checkpoint of a task module whose backbone sits under net.backbone
    bb_src = MobileNetV2Backbone(width_mult=0.35, out_indices=(6, 5))
    torch.save({"state_dict": {f"net.backbone.{k}": v for k, v in bb_src.state_dict().items()}}, tmp_path / "det.ckpt")
    dst = MobileNetV2(num_classes=4, width_mult=0.35)
    assert load_pretrained(dst, tmp_path / "w.safetensors").source_format == "mnv2_tasks"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(dst.eval()(x), src.eval()(x))
    bb = MobileNetV2Backbone(width_mult=0.35, out_indices=(6, 5))
    report = load_pretrained(bb, tmp_path / "det.ckpt")
    assert not report.missing


def test_width_mismatch_names_the_tensor(tmp_path):
    torch.save(torchvision.models.mobilenet_v2(width_mult=1.0).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match=r"tv.pth: tensor 'features.0.0.weight'.*width multiplier"):
        load_pretrained(MobileNetV2(width_mult=0.5), tmp_path / "tv.pth")


def test_refuses_pickled_objects_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: not a loadable weights file"):
        load_pretrained(MobileNetV2(), tmp_path / "evil.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_pretrained(MobileNetV2(), tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(MobileNetV2(), tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no MobileNetV2 weights recognised"):
        load_pretrained(MobileNetV2(), tmp_path / "other.pth")


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.3, 1.4])
def test_width_is_read_from_the_tensors(width):
    from torchvision.models import mobilenet_v2

    from mnv2_tasks.models import MobileNetV2
    from mnv2_tasks.models.pretrained import width_of

    assert width_of(mobilenet_v2(width_mult=width).state_dict()) == width
    assert width_of(MobileNetV2(num_classes=10, width_mult=width).state_dict()) == width
