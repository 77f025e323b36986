"""MobileNetV2 in torchvision's detectors, without a wrapper: out_channels, named maps, an FPN builder."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FasterRCNN, RetinaNet

from mnv2_tasks.models import MobileNetV2Backbone
from mnv2_tasks.models.fpn import mobilenetv2_fpn_backbone

TARGETS = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[30.0, 20.0, 90.0, 50.0], [5.0, 5.0, 25.0, 40.0]]), "labels": torch.tensor([2, 3])}]


def test_backbone_declares_out_channels_and_returns_named_maps():
    bb = MobileNetV2Backbone(0.35, out_indices=(2, 3, 4), return_dict=True).eval()
    out = bb(torch.randn(1, 3, 96, 96))
    assert list(out) == ["0", "1", "2"] and bb.out_channels == bb.feature_info.channels(2) == 112
    assert [v.shape[1] for v in out.values()] == bb.feature_info.channels()


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_torchvision_detector_trains_a_step_and_detects(detector):
    torch.manual_seed(0)
    if detector == "faster_rcnn":
        model = FasterRCNN(mobilenetv2_fpn_backbone(0.35, out_channels=32), num_classes=4, min_size=96, max_size=96)
    else:
        model = RetinaNet(mobilenetv2_fpn_backbone(0.35, returned_taps=(2, 3, 4), extra_p6p7=True, out_channels=32),
                          num_classes=4, min_size=96, max_size=96)
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 96)]
    model.train()
    losses = model(images, TARGETS)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss.backward()
    grads = [p.grad for p in model.backbone.body.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # the loss reaches the MobileNetV2 body
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "scores", "labels"}
    assert out[0]["boxes"].shape[-1] == 4
