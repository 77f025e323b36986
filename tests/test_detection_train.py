"""train(cfg) for detection on the embedded data: metrics.json, val_predictions.json, checkpoint -> plain network."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mnv2_tasks import load_model
from mnv2_tasks.train import train

from conftest import TINY_DET as TINY


def test_config_composes_paper_model_and_shapes_data(make_cfg):
    cfg = make_cfg("task=detection")
    assert cfg.model.net._target_ == "mnv2_tasks.models.ssdlite.build_ssdlite"
    assert cfg.data._target_ == "mnv2_tasks.data.coco.CocoDataModule"
    assert cfg.model.net.num_classes == cfg.data.num_classes == 5
    assert cfg.model.net.size == cfg.data.image_size
    assert cfg.monitor.metric == "val/mAP"
    tv = make_cfg("task=detection", "model=ssdlite_tv_mnv3")
    assert tv.model.net._target_ == "mnv2_tasks.models.torchvision_ssdlite.build_torchvision_ssdlite"
    assert tv.model.net.num_classes == 5


def test_train_detection_writes_coco_results(tiny_detector):
    metrics, out = tiny_detector.returned, str(tiny_detector.dir)
    saved = json.loads(open(f"{out}/metrics.json").read())
    for key in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"):
        assert key in saved
    assert 0.0 <= saved["mAP"] <= 1.0 and saved["mAP50"] >= saved["mAP"]
    assert saved["mAP"] == pytest.approx(metrics["mAP"])
    assert saved["ann_file"].endswith("annotations/instances_val.json") and os.path.isfile(saved["ann_file"])
    assert saved["num_images"] == 12  # every val image once (conftest's tiny set)
    preds = json.loads(open(f"{out}/val_predictions.json").read())
    assert preds and {r["category_id"] for r in preds} <= {1, 3, 7, 12}  # original COCO ids
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in preds)
    # anyone can re-run pycocotools on the written file and get the same numbers
    from mnv2_tasks.metrics.coco_eval import evaluate_results

    again, _ = evaluate_results(saved["ann_file"], preds)
    assert again["mAP"] == pytest.approx(saved["mAP"], abs=1e-9)

    net = load_model(f"{out}/checkpoints/last.ckpt")
    assert type(net).__name__ == "SSDLite" and net.task == "detection" and not net.training
    with torch.no_grad():
        dets = net(torch.randn(2, 3, 64, 64))
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}


def test_train_torchvision_baseline_through_same_pipeline(make_cfg):
    cfg = make_cfg(*TINY, "model=ssdlite_tv_mnv3", "trainer.max_epochs=1", "data.eval_batch_size=6")
    metrics = train(cfg)
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert os.path.isfile(f"{cfg.paths.output_dir}/val_predictions.json")
