"""tools/eval.py and tools/predict.py on a briefly trained classifier."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mnv2_tasks.evaluate import evaluate
from mnv2_tasks.models import CheckpointError

from conftest import TINY_CLS as TINY


@pytest.fixture
def trained_ckpt(tiny_classifier):
    return str(tiny_classifier.last), tiny_classifier.metrics


def test_eval_checkpoint_reproduces_training_metrics(make_cfg, trained_ckpt):
    ckpt, metrics = trained_ckpt
    got = evaluate(make_cfg(*TINY, f"ckpt={ckpt}", config_name="eval"))
    assert got["top1"] == pytest.approx(metrics["top1"]) and got["top5"] == pytest.approx(metrics["top5"])
    assert got["num_samples"] == 24


def test_eval_torchvision_weight_file(make_cfg, tmp_path):
    """A torchvision weight file evaluates through the same code as our checkpoints (untrained here: ~chance)."""
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=4).state_dict(), tmp_path / "tv.pth")
    got = evaluate(make_cfg(*TINY, "debug/blocks@model.net=paper", f"ckpt={tmp_path}/tv.pth", config_name="eval"))
    assert got["num_samples"] == 24 and 0.0 <= got["top1"] <= 1.0


def test_eval_refuses_checkpoint_of_other_width(make_cfg, trained_ckpt):
    ckpt, _ = trained_ckpt
    with pytest.raises(CheckpointError, match="width_mult"):
        evaluate(make_cfg(*TINY, "model.net.width_mult=0.5", f"ckpt={ckpt}", config_name="eval"))


def test_predict_draws_and_writes_json(trained_ckpt, shapes_root, tmp_path):
    import json

    from PIL import Image

    from mnv2_tasks.predict_cli import main as predict_main

    ckpt, _ = trained_ckpt
    folder = shapes_root / "imagefolder" / "val" / "star"
    assert predict_main([ckpt, str(folder), "--out", str(tmp_path / "p"), "--json"]) == 0
    pngs = sorted((tmp_path / "p").glob("*.pred.png"))
    assert len(pngs) == len(list(folder.iterdir()))
    assert Image.open(pngs[0]).size == Image.open(sorted(folder.iterdir())[0]).size
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    first = preds[0]["topk"]
    assert {p["name"] for p in first} <= {"circle", "square", "star", "triangle"}
    assert abs(sum(p["score"] for p in first) - 1.0) < 1e-4  # all 4 classes, softmax
