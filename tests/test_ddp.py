"""DDP on 2 CPU processes (gloo): validation metrics equal one process's on the same checkpoint and data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnv2_tasks.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_validation_counts_every_sample_once(make_cfg, shapes_root, tmp_path):
    # an odd number of validation images: a padding sampler would count one twice
    data = tmp_path / "imagefolder"
    shutil.copytree(shapes_root / "imagefolder", data)
    victim = sorted((data / "val" / "circle").iterdir())[0]
    victim.unlink()
    n_val = sum(1 for _ in (data / "val").rglob("*.jpg"))
    assert n_val % 2 == 1

    out = tmp_path / "ddp_run"
    args = ["task=classification", "model.net.width_mult=0.35", "data.batch_size=4", "data.num_workers=0",
            "data.image_size=48", "trainer.max_epochs=1", f"data.root={data}", "data.shapes_root=null"]
    cmd = [sys.executable, "train.py", *args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.enable_progress_bar=false", f"paths.output_dir={out}", f"paths.data_dir={shapes_root}",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_metrics = json.loads((out / "metrics.json").read_text())
    assert ddp_metrics["num_samples"] == n_val

    single = evaluate(make_cfg(*args, f"ckpt={out}/checkpoints/last.ckpt", config_name="eval"))
    assert single["num_samples"] == n_val
    assert ddp_metrics["top1"] == pytest.approx(single["top1"], abs=1e-6)
    assert ddp_metrics["top5"] == pytest.approx(single["top5"], abs=1e-6)
