"""SSDLite-MobileNetV2: paper numbers, output formats, anchors, box coder, matching, loss, postprocessing, export."""

from __future__ import annotations

import math

import pytest
import torch

from mnv2_tasks.models.anchors import AnchorGenerator, anchor_coverage
from mnv2_tasks.models.box_coder import BoxCoder
from mnv2_tasks.models.detection_loss import BACKGROUND, IGNORE, DetectionLoss, hard_negatives, match_anchors
from mnv2_tasks.models import build_ssdlite, build_torchvision_ssdlite, build_torchvision_ssdlite_mnv2
from mnv2_tasks.quant.deploy import DeployModule


def tiny(num_classes: int = 5, size: int = 96, **kw):
    torch.manual_seed(0)
    return build_ssdlite(num_classes, width_mult=0.35, size=size, **kw)


def test_paper_size_and_taps():
    """Table 6: 4.3M parameters and 0.8B MAdds with 81 classes at 320x320; heads on 576ch@16 and 1280ch@32."""
    from mnv2_tasks.benchmarks.common import count_madds, count_params

    m = build_ssdlite(81, width_mult=1.0, size=320)
    assert m.backbone.feature_info.channels() == [576, 1280]
    assert m.backbone.feature_info.reduction() == [16, 32]
    assert count_params(m) == pytest.approx(4.3e6, rel=0.02)
    assert count_madds(m, torch.randn(1, 3, 320, 320)) == pytest.approx(0.8e9, rel=0.03)
    # every prediction head is depthwise-separable: a depthwise 3x3 then a 1x1
    for block in [*m.head.bbox_reg, *m.head.cls_logits]:
        dw, pw = block[0].conv, block[1]
        assert dw.groups == dw.in_channels and dw.kernel_size == (3, 3) and pw.kernel_size == (1, 1)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert all(b.eps == 1e-3 and b.momentum == 0.03 for b in bns)
    assert [b[2].conv.out_channels for b in m.extras] == [512, 256, 256, 128]


@pytest.mark.parametrize("stride8", [None, "stride8", "expansion8"])
def test_grid_sizes_match_features_without_forward(stride8):
    kw = {} if stride8 is None else {"stride8_level": True, "stride8_tap": stride8, "min_ratio": 0.1}
    m = tiny(size=100, **kw).eval()
    if stride8 is not None:  # a first level at stride 8, read from the chosen tap
        level0 = m.backbone.feature_info[m.levels[0]]
        assert level0["reduction"] == 8
        assert level0["module"] == {"stride8": "blocks.5", "expansion8": "blocks.6.expansion"}[stride8]
    for size in [(96, 96), (100, 130)]:
        feats = m.features(torch.randn(1, 3, *size))
        assert [tuple(f.shape[-2:]) for f in feats] == m.grid_sizes(size)
        raw = m.deploy_forward(torch.randn(2, 3, *size))
        reg, cls = raw["bbox_regression"], raw["cls_logits"]
        assert reg.shape[1] == cls.shape[1] == m.anchors(size).shape[0]


def test_eval_output_format():
    m = tiny().eval()
    with torch.no_grad():
        out = m(torch.randn(3, 3, 96, 96))
    assert isinstance(out, list) and len(out) == 3
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert k <= m.postprocess_cfg.detections_per_img
        assert det["labels"].dtype == torch.int64 and det["boxes"].dtype == torch.float32
        if k:
            assert det["labels"].min() >= 1 and det["labels"].max() <= 4
            assert det["boxes"].min() >= 0 and det["boxes"].max() <= 96
            assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all()
            assert torch.all(det["scores"][:-1] >= det["scores"][1:])
            assert det["scores"].min() > m.postprocess_cfg.score_thresh


def test_train_output_is_finite_loss_dict_and_backprops():
    m = tiny().train()
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [40.0, 30.0, 90.0, 95.0]]), "labels": torch.tensor([1, 4])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},  # an image without objects
    ]
    losses = m(torch.randn(2, 3, 96, 96), targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert m.head.cls_logits[0][1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs targets"):
        m(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("box_loss,cls_loss", [("giou", "ce"), ("smooth_l1", "focal")])
def test_loss_options(box_loss, cls_loss):
    m = tiny(box_loss=box_loss, cls_loss=cls_loss).train()
    t = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([2])}]
    losses = m(torch.randn(2, 3, 96, 96), t * 2)
    assert all(torch.isfinite(v) for v in losses.values())
    assert m.score_fn == ("sigmoid" if cls_loss == "focal" else "softmax")


def test_loss_is_fp32_under_autocast():
    m = tiny().train()
    t = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([2])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = torch.randn(2, 3, 96, 96)
        raw = m.deploy_forward(images)
        assert raw["cls_logits"].dtype == torch.bfloat16
        losses = m.train_outputs(raw, images, t * 2)
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_box_coder_round_trip():
    torch.manual_seed(0)
    coder = BoxCoder()
    xy = torch.rand(50, 2) * 100
    boxes = torch.cat([xy, xy + torch.rand(50, 2) * 50 + 1], 1)
    axy = torch.rand(50, 2) * 100
    anchors = torch.cat([axy, axy + torch.rand(50, 2) * 50 + 1], 1)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-4)
    # a box equal to its anchor is the zero offset; a box shifted by its width is dx = 10 (weight 10)
    a = torch.tensor([[10.0, 10.0, 30.0, 50.0]])
    torch.testing.assert_close(coder.encode(a, a), torch.zeros(1, 4))
    shifted = a + torch.tensor([20.0, 0.0, 20.0, 0.0])
    torch.testing.assert_close(coder.encode(shifted, a), torch.tensor([[10.0, 0.0, 0.0, 0.0]]))
    doubled = torch.tensor([[0.0, 10.0, 40.0, 50.0]])  # twice as wide, same centre
    torch.testing.assert_close(coder.encode(doubled, a), torch.tensor([[0.0, 0.0, 5 * math.log(2), 0.0]]))
    # batched (N, A, 4) with (A, 4) anchors
    d = torch.randn(3, 50, 4)
    assert coder.decode(d, anchors).shape == (3, 50, 4)


def test_matching_hand_made():
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],    # 0: exactly gt 0
        [10.0, 0.0, 20.0, 10.0],   # 1: touches gt 0, IoU 0
        [0.0, 0.0, 12.0, 10.0],    # 2: IoU 10/12 with gt 0
        [50.0, 50.0, 60.0, 60.0],  # 3: best (but poor) anchor of gt 1
        [80.0, 80.0, 90.0, 90.0],  # 4: nothing
        [100.0, 0.0, 110.0, 10.0],  # 5: inside the ignore region
    ])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [52.0, 52.0, 70.0, 70.0]])
    matched = match_anchors(gt, anchors, iou_threshold=0.5, ignore_boxes=torch.tensor([[95.0, -5.0, 115.0, 15.0]]))
    # gt 1 overlaps anchor 3 with IoU 64/360 < 0.5 but still gets it (its best anchor)
    assert matched.tolist() == [0, BACKGROUND, 0, 1, BACKGROUND, IGNORE]
    # no ground truth: everything background
    assert (match_anchors(torch.zeros((0, 4)), anchors) == BACKGROUND).all()
    # an anchor shared as best by two boxes goes to the later box; the threshold is inclusive
    two = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    assert match_anchors(two, anchors[:1], 0.5).tolist() == [1]
    half = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert match_anchors(half, torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 10.0]]), 0.5).tolist() == [0, 0]


def test_hard_negative_mining_keeps_three_per_positive():
    loss = torch.tensor([[5.0, 0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 9.0, 0.05]])
    positive = torch.zeros(1, 10, dtype=torch.bool)
    positive[0, 0] = True
    valid = torch.ones(1, 10, dtype=torch.bool)
    valid[0, 8] = False  # ignored: never a negative, whatever its loss
    neg = hard_negatives(loss, positive, valid, 3.0)
    assert neg[0].nonzero().flatten().tolist() == [2, 3, 4]
    # an image with no positive still gives neg_pos_ratio negatives
    neg = hard_negatives(loss, torch.zeros_like(positive), torch.ones_like(valid), 3.0)
    assert neg[0].nonzero().flatten().tolist() == [0, 2, 8]
    # ... unless told otherwise (torchvision's SSD keeps none)
    assert not hard_negatives(loss, torch.zeros_like(positive), torch.ones_like(valid), 3.0, empty_image_negatives=0).any()
    assert hard_negatives(loss, positive, valid, 3.0, empty_image_negatives=0)[0].nonzero().flatten().tolist() == [2, 3, 4]


def test_loss_targets_perfect_prediction_has_zero_box_loss():
    m = tiny()
    anchors = m.anchors((96, 96))
    gt = anchors[[7, 200]] + torch.tensor([1.0, -1.0, 2.0, 0.5])
    loss = DetectionLoss(m.box_coder)
    matched = loss.match(anchors, [{"boxes": gt}])[0]
    reg = torch.zeros(1, len(anchors), 4)
    pos = matched >= 0
    reg[0, pos] = m.box_coder.encode(gt[matched[pos]], anchors[pos])
    cls = torch.zeros(1, len(anchors), 5)
    out = loss(reg, cls, anchors, [{"boxes": gt, "labels": torch.tensor([1, 2])}])
    assert out["bbox_regression"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["classification"].item() > 0
    with pytest.raises(ValueError, match="labels must be in 1..4"):
        loss(reg, cls, anchors, [{"boxes": gt, "labels": torch.tensor([0, 2])}])


def test_anchor_generator_layout_and_coverage():
    gen = AnchorGenerator([2.0, 3.0], min_ratio=0.2, max_ratio=0.9, num_levels=3)
    assert gen.num_anchors_per_location() == [6, 6, 6]
    assert gen.scales == pytest.approx([0.2, 0.55, 0.9, 1.0])
    anchors = gen.grid_anchors([(4, 4), (2, 2), (1, 1)], (100, 100))
    assert anchors.shape == ((16 + 4 + 1) * 6, 4)
    # first anchor: centre of cell (0, 0) of level 0, scale 0.2 square
    torch.testing.assert_close(anchors[0], torch.tensor([12.5 - 10, 12.5 - 10, 12.5 + 10, 12.5 + 10]))
    # second location of level 0 is one cell to the right (x before y), same boxes
    torch.testing.assert_close(anchors[6:12] - anchors[0:6], torch.tensor([25.0, 0.0, 25.0, 0.0]).expand(6, 4))
    # aspect ratio 2 box: w = s * sqrt(2), h = s / sqrt(2)
    w, h = anchors[2, 2] - anchors[2, 0], anchors[2, 3] - anchors[2, 1]
    assert (w / h).item() == pytest.approx(2.0, rel=1e-5)
    reduced = AnchorGenerator([2.0, 3.0], num_levels=2, reduce_lowest_level=True)
    assert reduced.num_anchors_per_location() == [3, 6]
    per_level = AnchorGenerator([[2.0], [2.0, 3.0]])
    assert per_level.num_anchors_per_location() == [4, 6]
    with pytest.raises(ValueError, match="scales needs 3 values"):
        AnchorGenerator([2.0], scales=[0.1, 0.2, 0.3, 0.4], num_levels=2)
    # coverage: a box equal to an anchor is covered, a thin sliver is not
    boxes = torch.stack([anchors[0], torch.tensor([0.0, 0.0, 100.0, 2.0])])
    rep = anchor_coverage(anchors, boxes, 0.5)
    assert rep["num_boxes"] == 2 and rep["covered"] == 0.5


def test_postprocess_nms_per_class_and_image():
    m = tiny(num_classes=3).eval()
    anchors = m.anchors((96, 96))
    a = len(anchors)
    reg = torch.zeros(2, a, 4)  # boxes = anchors
    cls = torch.full((2, a, 3), -10.0)
    cls[..., 0] = 10.0  # background everywhere
    # pick two heavily overlapping anchors and one far from both
    from torchvision.ops import box_iou

    iou = box_iou(anchors, anchors).fill_diagonal_(0)
    inside = (anchors.min(1).values >= 0) & (anchors.max(1).values <= 96)
    iou[~inside] = 0
    iou[:, ~inside] = 0
    i, j = divmod(int(iou.argmax()), a)
    assert iou[i, j] > 0.6
    far = int(((box_iou(anchors[[i, j]], anchors).max(0).values == 0) & inside).nonzero()[0])
    for img in range(2):
        cls[img, i, 1] = 10.0  # class 1, score ~1
        cls[img, j, 1] = 9.0   # class 1, overlaps i: suppressed
        cls[img, j, 2] = 9.5   # class 2 at the same place: kept (per-class NMS)
        cls[img, far, 2] = 10.0
    dets = m.postprocess({"bbox_regression": reg, "cls_logits": cls}, (96, 96))
    for det in dets:  # the same detections in both images: images never suppress each other
        top = det["scores"] > 0.3
        assert top.sum() == 3
        def key(label, box):
            return int(label), tuple(round(v, 3) for v in box.tolist())

        kept = {key(lab, b) for b, lab in zip(det["boxes"][top], det["labels"][top])}
        assert kept == {key(1, anchors[i]), key(2, anchors[j]), key(2, anchors[far])}
    # deployment preset drops the low scores; overrides apply on top
    m.use_postprocess("deploy")
    assert all(len(d["boxes"]) == 3 for d in m.postprocess({"bbox_regression": reg, "cls_logits": cls}, (96, 96)))
    m.use_postprocess("deploy", detections_per_img=1)
    assert [len(d["boxes"]) for d in m.postprocess({"bbox_regression": reg, "cls_logits": cls}, (96, 96))] == [1, 1]
    padded = m.export_outputs({"bbox_regression": reg, "cls_logits": cls}, (96, 96), "nms")
    assert padded[0].shape == (2, 1, 4) and padded[3].tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown"):
        m.use_postprocess("fast")


def _overlapping_candidates(n: int, k: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, k, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, k, 2, generator=g) * 30], -1)
    return boxes, torch.rand(n, k, generator=g), torch.randint(1, num_classes + 1, (n, k), generator=g)


def test_grouped_nms_is_nms_inside_each_image_and_class():
    """The exported graphs' op (ONNX NonMaxSuppression's semantics) against torchvision's NMS run group by group."""
    from torchvision.ops import nms

    from mnv2_tasks.models.detection_postprocess import grouped_nms

    boxes, scores, labels = _overlapping_candidates(3, 400, 4)
    per_class = torch.where(labels[:, None, :] == torch.arange(1, 5)[None, :, None], scores[:, None, :], -1.0)
    kept = grouped_nms(boxes, per_class, 400, 0.5, -0.5)
    expected = set()
    for b in range(3):
        for c in range(4):
            idx = (labels[b] == c + 1).nonzero().squeeze(1)
            expected |= {(b, c, int(i)) for i in idx[nms(boxes[b, idx], scores[b, idx], 0.5)]}
    assert {tuple(r) for r in kept.tolist()} == expected and len(kept) == len(expected)
    assert 100 < len(expected) < 1200  # some suppressed, many kept
    # one NMS over all groups would suppress across them: the grouping is doing work
    assert len(nms(boxes.reshape(-1, 4), scores.reshape(-1), 0.5)) < len(expected)
    # at most max_per_class per (image, class), the best ones
    capped = grouped_nms(boxes, per_class, 5, 0.5, -0.5)
    groups = capped[:, 0] * 4 + capped[:, 1]
    assert torch.bincount(groups).max() == 5 and len(capped) == 5 * 12
    best = {tuple(r) for r in kept.tolist()}
    assert {tuple(r) for r in capped.tolist()} <= best


def test_exported_detections_are_eager_detections_at_any_batch(tmp_path):
    """select_detections exports as one NonMaxSuppression per (image, class) that ONNX Runtime runs, keeping what eager
    PyTorch keeps (batched_nms), in the same order, at batch 1 and 4."""
    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    from mnv2_tasks.models.detection_postprocess import EVAL_POSTPROCESS, select_detections
    from mnv2_tasks.quant.onnx_export import TRANSLATIONS

    class Select(torch.nn.Module):
        def forward(self, boxes, scores):
            return select_detections(boxes, scores, EVAL_POSTPROCESS)

    boxes, scores, _ = _overlapping_candidates(4, 300, 1)
    scores = torch.rand(4, 300, 3, generator=torch.Generator().manual_seed(1))  # (N, A, K): 900 pairs, 1000 asked
    batch = Dim("batch", min=1, max=64)
    path = tmp_path / "select.onnx"
    torch.onnx.export(Select().eval(), (boxes[:2], scores[:2]), dynamo=True, opset_version=20, input_names=["boxes", "scores"],
                      dynamic_shapes=({0: batch}, {0: batch}), custom_translation_table=TRANSLATIONS).save(str(path))
    # one NonMaxSuppression whose scores have the class dimension (not the whole batch flattened into one class)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    (node,) = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    assert shapes[node.input[1]][1:] == [3, 900] and shapes[node.input[0]][1:] == [900, 4]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 4):
        ref = Select()(boxes[:n], scores[:n])
        got = session.run(None, {"boxes": boxes[:n].numpy(), "scores": scores[:n].numpy()})
        assert len(ref[0]) > 50 * n
        for r, g in zip(ref, got):
            torch.testing.assert_close(torch.from_numpy(g), r)


def test_postprocess_presets_from_builder():
    m = tiny(eval_postprocess={"score_thresh": 0.05}, deploy_postprocess={"detections_per_img": 7}, postprocess_mode="deploy")
    assert m.postprocess_mode == "deploy" and m.postprocess_cfg.detections_per_img == 7
    assert m.postprocess_presets["eval"].score_thresh == 0.05
    assert m.postprocess_presets["eval"].detections_per_img == 100


@pytest.mark.parametrize("outputs", ["decoded", "nms"])
def test_torch_export_dynamic_batch(outputs):
    from torch.export import Dim

    m = tiny(size=64).eval()
    mod = DeployModule(None, m, outputs).eval()
    ep = torch.export.export(mod, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"images": {0: Dim("batch", min=1, max=32)}})
    x = torch.randn(3, 3, 64, 64)
    for ref, got in zip(mod(x), ep.module()(x)):
        torch.testing.assert_close(ref, got)


@pytest.mark.parametrize("backbone", ["mobilenet_v3", "ours"])
def test_torchvision_baseline_same_interface(backbone):
    """torchvision's SSDLite (its MobileNetV3, or our MobileNetV2 inside its recipe) behind the model contract."""
    torch.manual_seed(0)
    if backbone == "ours":
        tv = build_torchvision_ssdlite_mnv2(5, size=96, width_mult=0.35)
        assert tv.takes_mobilenetv2_weights and tv.pretrained_target() is tv.model.backbone.body
        assert tv.model.backbone.body.feature_info.reduction() == [16, 32]
    else:
        tv = build_torchvision_ssdlite(5, size=96)
    tv.train()
    t = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([2])}] * 2
    losses = tv(torch.randn(2, 3, 96, 96), t)
    assert set(losses) == {"bbox_regression", "classification"}
    tv.eval()
    with torch.no_grad():
        out = tv(torch.randn(2, 3, 96, 96))
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert out[0]["boxes"].numel() == 0 or out[0]["boxes"].max() <= 96
