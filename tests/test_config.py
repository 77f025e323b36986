"""Config composition: every task, option group and experiment composes and builds its objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def test_all_three_tasks_are_configured():
    assert {"classification", "detection", "segmentation"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_task_composes_and_builds(make_cfg, task):
    cfg = make_cfg(f"task={task}", "model.net.width_mult=0.35")
    assert cfg.task == task
    module = instantiate(cfg.model)
    assert module.task_name == task
    assert cfg.monitor.metric.startswith("val/")
    dm = instantiate(cfg.data)
    assert hasattr(dm, "train_dataloader") and hasattr(dm, "val_dataloader")
    trainer_cfg = cfg.trainer
    assert trainer_cfg.accelerator == "cpu" and trainer_cfg._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("opt,cls,sched", [("sgd", torch.optim.SGD, "cosine"), ("rmsprop", torch.optim.RMSprop, "step"),
                                           ("adamw", torch.optim.AdamW, "poly"), ("sgd", torch.optim.SGD, "constant")])
def test_optimizer_and_scheduler_groups(make_cfg, opt, cls, sched):
    cfg = make_cfg("task=classification", "model.net.width_mult=0.35", f"optimizer={opt}", f"scheduler={sched}")
    module = instantiate(cfg.model)
    optimizer = module.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, cls)
    assert module.scheduler_kwargs["name"] == sched


def test_experiment_overrides_task_defaults(make_cfg):
    cfg = make_cfg("experiment=imagenet_mnv2_paper", "data.root=/data/imagenet")
    assert cfg.model.net.num_classes == 1000 and cfg.model.net.width_mult == 1.0
    assert cfg.model.optimizer._target_ == "torch.optim.RMSprop" and cfg.trainer.strategy == "ddp"
    assert "ema" in cfg.callbacks


def test_warmup_schedule_shapes():
    from mnv2_tasks.tasks.base import WarmupSchedule

    cos = WarmupSchedule(total_steps=100, warmup_steps=10, name="cosine", min_lr_ratio=0.0)
    assert cos(0) == pytest.approx(0.01) and cos(10) == pytest.approx(1.0) and cos(100) == pytest.approx(0.0)
    assert cos(55) == pytest.approx(0.5)
    step = WarmupSchedule(total_steps=100, name="step", step_size=10, gamma=0.5)
    assert step(9) == 1.0 and step(10) == 0.5 and step(25) == 0.25
    poly = WarmupSchedule(total_steps=100, name="poly", power=1.0)
    assert poly(50) == pytest.approx(0.5)
