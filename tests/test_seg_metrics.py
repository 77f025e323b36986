"""Confusion-matrix segmentation metrics: a hand computation with ignore pixels, absent classes, DDP sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnv2_tasks.metrics.segmentation import ConfusionMatrix, segmentation_scores

I = 255  # noqa: E741


def test_hand_computed_case_with_ignore_pixels():
    # 3 classes; 255 pixels are ignored whatever is predicted there
    target = torch.tensor([[[0, 0, 1, I],
                            [1, 1, 2, I]]])
    preds = torch.tensor([[[0, 1, 1, 2],
                           [1, 0, 2, 0]]])
    cm = ConfusionMatrix(3, ["bg", "a", "b"])
    cm.update(preds, target)
    # counted pixels: (t,p) = (0,0) (0,1) (1,1) (1,1) (1,0) (2,2)
    assert cm.mat.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    m = cm.compute()
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(3+3-2) = 1/2, IoU2 = 1/1
    assert m["iou_bg"] == pytest.approx(1 / 3)
    assert m["iou_a"] == pytest.approx(1 / 2)
    assert m["iou_b"] == pytest.approx(1.0)
    assert m["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    assert m["mAcc"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["num_pixels"] == 6
    assert m["absent_classes"] == []


def test_logits_are_argmaxed():
    target = torch.tensor([[[0, 1], [2, I]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 2]]]), 3).permute(0, 3, 1, 2).float()
    cm = ConfusionMatrix(3)
    cm.update(logits, target)
    assert cm.mat.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_absent_class_is_nan_and_left_out_of_the_mean():
    # class 2 has no ground truth and is never predicted: absent, not 0 and not 1
    target = torch.tensor([[[0, 0, 1, 1]]])
    preds = torch.tensor([[[0, 0, 1, 0]]])
    cm = ConfusionMatrix(4, ["bg", "a", "b", "c"])
    cm.update(preds, target)
    m = cm.compute()
    assert math.isnan(m["iou_b"]) and math.isnan(m["iou_c"])
    assert m["absent_classes"] == ["b", "c"]
    assert m["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_only_predicted_scores_zero():
    target = torch.tensor([[[0, 0, 0, 0]]])
    preds = torch.tensor([[[0, 0, 0, 1]]])
    m = segmentation_scores(torch.bincount(target.flatten() * 2 + preds.flatten(), minlength=4).reshape(2, 2).numpy())
    assert m["iou_1"] == 0.0 and m["iou_0"] == pytest.approx(3 / 4)
    assert m["mIoU"] == pytest.approx(3 / 8)


def test_accumulates_pixels_not_batch_means():
    # a small image scored perfectly and a large one scored badly: the per-batch mean would be 0.75
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[[1]]]), torch.tensor([[[1]]]))
    cm.update(torch.zeros(1, 10, 10, dtype=torch.long), torch.ones(1, 10, 10, dtype=torch.long))
    m = cm.compute()
    assert m["iou_1"] == pytest.approx(1 / 101)
    assert m["pixel_acc"] == pytest.approx(1 / 101)


def test_rejects_out_of_range_ids_and_shape_mismatch():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target holds class ids"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="do not match"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


def test_empty_matrix_is_nan_not_zero():
    m = ConfusionMatrix(2).compute()
    assert math.isnan(m["mIoU"]) and math.isnan(m["pixel_acc"]) and m["absent_classes"] == ["0", "1"]


def _ddp_worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(2)
        # rank 0 sees one correct pixel of class 0, rank 1 one class-1 pixel predicted as 0
        cm.update(torch.tensor([[[0]]]), torch.tensor([[[rank]]]))
        results[rank] = cm.compute()["iou_0"], cm.mat.tolist()
    finally:
        dist.destroy_process_group()


def test_matrices_are_summed_across_ranks(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    # both ranks report the global IoU (1 / 2), while each local matrix holds one pixel
    assert results[0][0] == pytest.approx(0.5) and results[1][0] == pytest.approx(0.5)
    assert results[0][1] == [[1, 0], [0, 0]] and results[1][1] == [[0, 0], [1, 0]]
