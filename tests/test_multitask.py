"""task=multitask: one trunk, SSDLite and DeepLabV3+-lite heads; outputs, training, both metrics, export, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnv2_tasks.models.multitask import build_multitask
from conftest import TINY_MT as TINY, qat_overrides
from conftest import TINY_BLOCKS


def _tiny_net():
    torch.manual_seed(0)
    return build_multitask(5, 0.35, 64, seg_head_chs=32, seg_low_chs=16, inverted_residual_setting=TINY_BLOCKS)


def test_one_backbone_pass_feeds_both_heads_in_train_and_eval_mode():
    net = _tiny_net().train()
    calls = []
    net.backbone.register_forward_hook(lambda *a: calls.append(1))
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])}] * 2
    out = net(images, targets)
    assert calls == [1]  # the trunk ran once for both heads
    assert set(out) == {"detection", "segmentation"}
    assert set(out["detection"]) == {"bbox_regression", "classification"}
    assert out["segmentation"]["out"].shape == (2, 5, 64, 64)
    net.eval()
    with torch.no_grad():
        pred = net(torch.randn(3, 3, 64, 80))
    assert set(pred) == {"detections", "segmentation"} and len(pred["detections"]) == 3
    assert set(pred["detections"][0]) == {"boxes", "scores", "labels"}
    assert pred["segmentation"].shape == (3, 5, 64, 80)  # logits at the input resolution
    # the backbone's outputs: the stride-4 tap for the decoder, then the detector's two levels
    assert net.backbone.feature_info.reduction() == [4, 16, 32] and net.levels == [1, 2]


def test_train_writes_both_tasks_metrics_and_per_head_losses(tiny_multitask):
    metrics, out = tiny_multitask.returned, str(tiny_multitask.dir)
    saved = json.loads(open(f"{out}/metrics.json").read())
    for key in ("mAP", "mAP50", "mAP75", "mIoU", "pixel_acc", "iou_background", "iou_circle"):
        assert key in saved, key
    assert 0.0 <= saved["mAP"] <= 1.0 and 0.0 <= saved["mIoU"] <= 1.0
    assert saved["task"] == "multitask" and metrics["mIoU"] == pytest.approx(saved["mIoU"])
    assert (Path(out) / "val_predictions.png").is_file() and (Path(out) / "curves.png").is_file()
    import csv

    logs = next(Path(out).rglob("metrics.csv"))
    header = next(csv.reader(open(logs)))
    assert {"val/bbox_regression", "val/classification", "val/seg", "val/loss"} <= set(header)  # one curve per head
    from mnv2_tasks import load_model

    ckpt = torch.load(f"{out}/checkpoints/last.ckpt", weights_only=True)
    inputs = ckpt["mnv2_tasks"]["input"]
    assert inputs["class_names"] == ["circle", "square", "triangle", "star"] and len(inputs["category_ids"]) == 4
    net = load_model(f"{out}/checkpoints/last.ckpt")
    assert net.task == "multitask" and not net.training


def test_boxes_without_masks_are_a_clear_error(shapes_root, tmp_path):
    from mnv2_tasks.data.coco_multitask import CocoMultiTask
    from mnv2_tasks.data.images import DataError

    data = json.loads((shapes_root / "coco" / "annotations" / "instances_val.json").read_text())
    for a in data["annotations"]:
        a.pop("segmentation", None)
    bad = tmp_path / "boxes_only.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"boxes_only.json: \d+ annotations have a box but no 'segmentation'.*task=detection"):
        CocoMultiTask(bad, shapes_root / "coco" / "val")


@pytest.mark.slow
def test_qat_exports_one_graph_with_both_output_groups(make_cfg, tmp_path, tiny_multitask):
    """quant=qat from a multitask run: one ONNX graph, detections (NMS in the graph) and segmentation logits,
    equal to the PyTorch converted model in ONNX Runtime, and both metrics measured in ORT."""
    from mnv2_tasks.quant.deploy import DeployModule
    from mnv2_tasks.quant.export import load_for_export
    from mnv2_tasks.quant.ort_runner import OrtModel
    from mnv2_tasks.quant.parity import compare_outputs
    from mnv2_tasks.quant.pt2e import convert

    from mnv2_tasks.train import train

    cfg_q = make_cfg(*TINY, *qat_overrides(tiny_multitask.last))
    cfg_q.paths.output_dir = str(tmp_path / "qat")
    train(cfg_q)
    saved = json.loads((tmp_path / "qat" / "metrics.json").read_text())
    for key in ("onnx_fp32_mAP", "onnx_int8_mAP", "onnx_fp32_mIoU", "onnx_int8_mIoU"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["onnx_fp32_mIoU"] == pytest.approx(saved["torch_fp32_mIoU"], abs=1e-4)
    model = OrtModel(tmp_path / "qat" / "model.int8.onnx")
    assert model.output_names == ["boxes", "scores", "labels", "num_detections", "seg_logits"]
    images = torch.randn(3, 3, 64, 64)
    _, net, prepared, _ = load_for_export(tmp_path / "qat" / "checkpoints" / "last.ckpt", lambda: images[:2])
    rep = compare_outputs(DeployModule(convert(prepared), net, "nms+logits").eval(), model, images)
    assert rep["seg_logits"]["shape"] == [3, 5, 64, 64]
    assert rep["seg_logits"]["max_abs"] <= 0.25 * max(rep["seg_logits"]["scale"], 1e-3)
    got = model(images)
    assert set(got) == {"detections", "segmentation"} and len(got["detections"]) == 3


def test_eval_and_predict_take_a_multitask_checkpoint(make_cfg, shapes_root, tmp_path, tiny_multitask):
    from mnv2_tasks.evaluate import evaluate
    from mnv2_tasks.predict import Predictor
    from mnv2_tasks.predict_cli import main as predict_main

    metrics, ckpt = tiny_multitask.metrics, str(tiny_multitask.last)
    got = evaluate(make_cfg(*TINY, f"ckpt={ckpt}", config_name="eval"))
    assert got["mAP"] == pytest.approx(metrics["mAP"], abs=1e-6) and got["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-6)
    image = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[0]
    from mnv2_tasks.data.images import read_rgb

    out = Predictor(ckpt)(read_rgb(image))
    assert {"boxes", "scores", "category_ids", "mask"} <= set(out) and out["mask"].shape == read_rgb(image).shape[:2]
    assert predict_main([ckpt, str(image), "--out", str(tmp_path / "p"), "--json"]) == 0  # boxes and mask on one picture
    rec = json.loads((tmp_path / "p" / "predictions.json").read_text())[0]
    assert "detections" in rec and "pixels_per_class" in rec
