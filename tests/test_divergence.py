"""A diverged run stops with where and why, exits non-zero, and keeps only finite checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mnv2_tasks.divergence import DivergedError, non_finite_tensors
from mnv2_tasks.train import train

from conftest import TINY_CLS


class PoisonWeights(Callback):
    """From ``epoch`` on, the first convolution's weights are inf: the loss stops being finite at once."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= self.epoch:
            with torch.no_grad():
                next(p for p in pl_module.net.parameters() if p.dim() == 4).fill_(float("inf"))


class PoisonStatistics(Callback):
    """At the last step of ``epoch``, a BatchNorm running variance becomes inf: the training loss (batch statistics)
    stays finite, the network does not (as a learning rate too high drives the statistics to inf)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            bn = next(m for m in pl_module.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))


def _checkpoints(run: Path) -> dict:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((run / "checkpoints").glob("*.ckpt"))}


@pytest.mark.parametrize("poison,message", [
    ("PoisonWeights", r"diverged at epoch 1, step \d+: the training loss is (nan|inf).*learning rate"),
    ("PoisonStatistics", r"diverged by the end of epoch 1 .*BatchNorm-statistics tensors hold inf or NaN.*learning rate"),
])
def test_a_diverged_run_stops_naming_where_and_keeps_only_finite_checkpoints(make_cfg, poison, message):
    cfg = make_cfg(*TINY_CLS, "trainer.max_epochs=3", f"+callbacks.poison._target_=test_divergence.{poison}",
                   "data.eval_batch_size=8")
    with pytest.raises(DivergedError, match=message):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    ended = json.loads((run / "metrics.json").read_text())
    assert ended["ended"] == "diverged" and ended["epochs"] == 1 and "diverged" in ended["error"]
    ckpts = _checkpoints(run)
    assert ckpts["last.ckpt"]["epoch"] == 0  # the last finite epoch, not overwritten
    assert all(not non_finite_tensors(c["state_dict"]) for c in ckpts.values()), list(ckpts)


def test_a_non_finite_checkpoint_is_never_written_over_a_finite_one(tmp_path):
    from mnv2_tasks.atomic_files import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"net.bn.running_var": torch.ones(4)}, "epoch": 0}, path)
    with pytest.raises(DivergedError, match=r"last.ckpt: not written: 1 weight / BatchNorm-statistics tensors hold inf"):
        io.save_checkpoint({"state_dict": {"net.bn.running_var": torch.tensor([1.0, float("inf"), 1.0, 1.0])}, "epoch": 1}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 0
    # observers of a QAT graph start at +-inf by design: not weights, not refused
    io.save_checkpoint({"state_dict": {"net.graph.activation_post_process_0.min_val": torch.tensor(float("inf"))}}, path)


def test_the_command_line_exits_non_zero_with_one_line(shapes_root, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, str(root / "train.py"), *TINY_CLS, "trainer.max_epochs=2", "data.eval_batch_size=8",
                          "+callbacks.poison._target_=test_divergence.PoisonWeights", "trainer.accelerator=cpu",
                          "trainer.enable_progress_bar=false", f"paths.data_dir={shapes_root}", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run diverged at epoch 1") and "learning rate" in last, run.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["ended"] == "diverged"
