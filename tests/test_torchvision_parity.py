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
