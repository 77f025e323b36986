"""The hand-written detection pieces pinned to torchvision's: default boxes and the box coder."""

from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from mnv2_tasks.models import build_ssdlite
from mnv2_tasks.models.anchors import AnchorGenerator
from mnv2_tasks.models.box_coder import BoxCoder


def test_default_boxes_equal_torchvisions_at_320_for_its_ssdlite_configuration():
    """torchvision's ssdlite320_mobilenet_v3_large: 6 levels, aspect ratios [2, 3], scales 0.2-0.95."""
    theirs = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    ours = AnchorGenerator([2.0, 3.0], 0.2, 0.95, num_levels=6)
    # the grids of an SSDLite at 320 px (the paper's taps at 16 and 32, then four stride-2 extra layers)
    grids = build_ssdlite(81, 1.0, 320).grid_sizes((320, 320))
    assert grids == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    maps = [torch.zeros(1, 1, h, w) for h, w in grids]
    ref = theirs(ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)]), maps)[0]
    got = ours.grid_anchors(grids, (320, 320))
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)  # same boxes, same order, within 1e-4 px


def test_box_coder_encodes_and_decodes_as_torchvisions():
    torch.manual_seed(0)
    xy = torch.rand(200, 2) * 300
    anchors = torch.cat([xy, xy + torch.rand(200, 2) * 80 + 2], 1)
    gxy = torch.rand(200, 2) * 300
    boxes = torch.cat([gxy, gxy + torch.rand(200, 2) * 120 + 1], 1)
    ours, theirs = BoxCoder((10.0, 10.0, 5.0, 5.0)), det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    deltas = ours.encode(boxes, anchors)
    torch.testing.assert_close(deltas, theirs.encode_single(boxes, anchors), atol=1e-5, rtol=1e-5)
    noisy = deltas + torch.randn_like(deltas) * 0.5
    torch.testing.assert_close(ours.decode(noisy, anchors), theirs.decode_single(noisy, anchors), atol=1e-3, rtol=1e-5)


def _copy_by_order(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Load ``src``'s state into ``dst`` tensor by tensor in module order (same architecture, other names)."""
    s, d = src.state_dict(), dst.state_dict()
    assert [v.shape for v in s.values()] == [v.shape for v in d.values()]
    dst.load_state_dict(dict(zip(d.keys(), s.values())))


def test_ssdlite_with_torchvisions_options_is_torchvisions_recipe_on_our_backbone():
    """Our SSDLite with the paper's six levels, width-scaled extra layers and torchvision's loss options
    computes what ``build_torchvision_ssdlite_mnv2`` computes: same parameters, anchors, raw outputs and losses
    (an image without objects and a crowd region included). With our loss defaults the losses differ."""
    from mnv2_tasks.models import build_torchvision_ssdlite_mnv2

    kw = dict(stride8_level=False, min_ratio=0.2, max_ratio=0.95, scale_extras=True, reduce_lowest_level=False)
    torch.manual_seed(0)
    tv = build_torchvision_ssdlite_mnv2(5, size=160, width_mult=0.35).train()
    ours = build_ssdlite(5, 0.35, 160, empty_image_negatives=0, ignore_crowd=False, **kw).train()
    default_loss = build_ssdlite(5, 0.35, 160, **kw).loss
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())
    _copy_by_order(tv.model.backbone.body, ours.backbone)
    _copy_by_order(tv.model.backbone.extra, ours.extras)
    for theirs, mine in ((tv.model.head.regression_head.module_list, ours.head.bbox_reg),
                         (tv.model.head.classification_head.module_list, ours.head.cls_logits)):
        _copy_by_order(theirs, mine)
    x = torch.randn(3, 3, 160, 160)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [80.0, 90.0, 150.0, 120.0]]), "labels": torch.tensor([2, 4]),
         "ignore_boxes": torch.tensor([[100.0, 0.0, 160.0, 60.0]])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64), "ignore_boxes": torch.zeros((0, 4))},
        {"boxes": torch.tensor([[30.0, 30.0, 40.0, 44.0]]), "labels": torch.tensor([1]), "ignore_boxes": torch.zeros((0, 4))},
    ]
    raw_tv, raw_ours = tv.deploy_forward(x), ours.deploy_forward(x)
    for k in ("bbox_regression", "cls_logits"):
        torch.testing.assert_close(raw_ours[k], raw_tv[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.anchors((160, 160)), tv._anchors(x)[0], atol=1e-4, rtol=0)
    loss_tv = tv.train_outputs(raw_tv, x, targets)
    loss_ours = ours.train_outputs(raw_ours, x, targets)
    for k in ("bbox_regression", "classification"):
        torch.testing.assert_close(loss_ours[k], loss_tv[k], atol=1e-5, rtol=1e-5)
    # our defaults (crowd regions ignored, 3 negatives in an image without objects) give another loss
    anchors = ours.anchors((160, 160))
    other = default_loss(raw_ours["bbox_regression"], raw_ours["cls_logits"], anchors, targets)
    assert not torch.isclose(other["classification"], loss_tv["classification"], rtol=1e-4)
