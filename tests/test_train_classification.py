"""train(cfg) for classification on the embedded data: metrics, checkpoints, curves, resume, load_model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnv2_tasks import load_model
from mnv2_tasks.models import CheckpointError
from mnv2_tasks.train import train

from conftest import TINY_CLS as TINY
from conftest import TINY_BLOCKS


def test_train_classification_writes_run_dir(tiny_classifier):
    metrics, out = tiny_classifier.returned, str(tiny_classifier.dir)
    saved = json.loads(open(f"{out}/metrics.json").read())
    assert 0.0 <= saved["top1"] <= 1.0 and 0.0 <= saved["top5"] <= 1.0
    assert saved["top5"] >= saved["top1"]
    assert saved["num_samples"] == 24  # 4 classes x 6 val images, each counted once
    assert saved["top1"] == pytest.approx(metrics["top1"])
    # where the fitting time went: the parts add up to no more than the whole
    assert 0.0 < saved["time_step_fraction"] <= 1.0
    assert saved["time_step_s"] + saved["time_data_s"] + saved["time_val_s"] <= saved["time_fit_s"] + 0.2
    import os

    assert os.path.isfile(f"{out}/checkpoints/last.ckpt")
    assert any(f.startswith("best-") for f in os.listdir(f"{out}/checkpoints"))
    assert os.path.getsize(f"{out}/curves.png") > 1000

    # the plain network comes back without Lightning and gives the same predictions
    net = load_model(f"{out}/checkpoints/last.ckpt")
    assert type(net).__name__ == "MobileNetV2" and not net.training
    ckpt = torch.load(f"{out}/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["mnv2_tasks"]["task"] == "classification"
    x = torch.randn(2, 3, 48, 48)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    ref = type(net)(num_classes=4, width_mult=0.35, dropout=0.1, inverted_residual_setting=TINY_BLOCKS).eval()
    ref.load_state_dict(state)
    torch.testing.assert_close(net(x), ref(x))


def test_resume_from_checkpoint_continues_epochs(make_cfg, tmp_path, tiny_classifier):
    cfg2 = make_cfg(*TINY, "trainer.max_epochs=3", f"ckpt_path={tiny_classifier.last}")  # 2 epochs done
    cfg2.paths.output_dir = str(tmp_path / "resumed")
    metrics = train(cfg2)
    assert metrics["epochs"] == 3
    assert torch.load(f"{tmp_path}/resumed/checkpoints/last.ckpt", weights_only=True)["epoch"] == 2


def test_last_checkpoint_is_the_last_epoch_when_the_best_is_earlier(make_cfg):
    """last.ckpt is the end of training even when no later validation beats the first: monitoring the step,
    minimised, makes epoch 0 the best for good (Lightning 2.6's save_last alone left last.ckpt at that epoch)."""
    cfg = make_cfg(*TINY, "trainer.max_epochs=3", "monitor.metric=step", "monitor.mode=min")
    train(cfg)
    ckpts = Path(cfg.paths.output_dir, "checkpoints")
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["best-000.ckpt", "last.ckpt"]
    best, last = (torch.load(ckpts / n, weights_only=True) for n in ("best-000.ckpt", "last.ckpt"))
    assert best["epoch"] == 0 and last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in best["state_dict"].items() if v.is_floating_point())


def test_resume_refuses_other_width(make_cfg, tiny_classifier):
    cfg2 = make_cfg(*TINY, "model.net.width_mult=0.5", f"ckpt_path={tiny_classifier.last}")
    with pytest.raises(CheckpointError, match=r"width_mult=0.35.*model.net.width_mult=0.35"):
        train(cfg2)


def test_num_classes_mismatch_is_explained(make_cfg):
    cfg = make_cfg(*TINY, "model.net.num_classes=10")
    with pytest.raises(ValueError, match="has 4 classes.*model.net.num_classes=4"):
        train(cfg)


def test_frozen_backbone_keeps_weights_and_bn_statistics(make_cfg, tmp_path):
    from mnv2_tasks.models import MobileNetV2

    init = MobileNetV2(num_classes=4, width_mult=0.35, inverted_residual_setting=TINY_BLOCKS)
    torch.save(init.state_dict(), tmp_path / "init.pth")
    cfg = make_cfg(*TINY, "trainer.max_epochs=1", "model.freeze_backbone=true", f"model.pretrained={tmp_path}/init.pth",
                   "model.net.dropout=0.0")
    train(cfg)
    after = torch.load(f"{cfg.paths.output_dir}/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    before = init.state_dict()
    for k, v in before.items():
        if k.startswith("classifier."):
            assert not torch.equal(after[f"net.{k}"], v), f"{k} should train"
        else:  # convolutions, BatchNorm affine and running statistics alike
            assert torch.equal(after[f"net.{k}"], v), f"{k} changed in a frozen backbone"


def test_ema_callback_averages_weights(make_cfg):
    cfg = make_cfg(*TINY, "trainer.max_epochs=1", "callbacks=ema", "callbacks.ema.update_starting_at_step=0",
                   "callbacks.ema.decay=0.5")
    metrics = train(cfg)
    ckpt = torch.load(f"{cfg.paths.output_dir}/checkpoints/last.ckpt", weights_only=True)
    # Lightning stores the averaged weights as state_dict and the raw ones beside them
    assert "current_model_state" in ckpt
    differs = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and not torch.equal(v, ckpt["current_model_state"][k])]
    assert differs and 0.0 <= metrics["top1"] <= 1.0


def test_resume_with_other_settings_tells_the_truth(make_cfg, tmp_path, tiny_classifier, caplog):
    """What cannot change mid-run is refused naming both values; what the checkpoint's state overrides is said plainly;
    the rest is applied and listed."""
    from mnv2_tasks.resume import ResumeError

    last = f"ckpt_path={tiny_classifier.last}"
    with pytest.raises(ResumeError, match=r"model.optimizer._target_: 'torch.optim.AdamW' in the checkpoint, 'torch.optim.SGD' now"):
        train(make_cfg(*TINY, "optimizer=sgd", last))
    with pytest.raises(ResumeError, match=r"data.image_size: 48 in the checkpoint, 64 now"):
        train(make_cfg(*TINY, "data.image_size=64", last))
    cfg = make_cfg(*TINY, "trainer.max_epochs=3", "model.optimizer.lr=0.5", last)
    cfg.paths.output_dir = str(tmp_path / "resumed")
    assert train(cfg)["epochs"] == 3
    assert "model.optimizer.lr: 0.005 -> 0.5: NOT applied, the checkpoint's optimizer/scheduler state wins" in caplog.text
    assert "trainer.max_epochs: 2 -> 3: applied" in caplog.text
