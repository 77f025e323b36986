"""pretrain=embedded: a classifier trained once on the embedded ImageFolder shapes, cached, loaded into the backbone."""

from __future__ import annotations

import torch

from mnv2_tasks.models.mobilenetv2 import MobileNetV2Backbone
from mnv2_tasks.models.pretrained import load_pretrained
from mnv2_tasks.pretrain import ensure_embedded_backbone
from mnv2_tasks.train import _pretrained_backbone

QUICK = ["task=classification", "trainer.max_epochs=1", "data.num_workers=0", "data.batch_size=16"]
QUICK_OVERRIDE = "pretrain.overrides=[" + ",".join(f"'{o}'" for o in QUICK) + "]"  # as on the command line


def test_embedded_backbone_is_trained_once_and_cached(shapes_root, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.symlink_to(shapes_root, target_is_directory=True)
    ckpt = ensure_embedded_backbone(0.35, data_dir, overrides=QUICK, accelerator="cpu", progress=False)
    assert ckpt.is_file() and ckpt.parent.parent == data_dir / "pretrained"
    assert (ckpt.parent / "metrics.json").is_file()  # the pretraining run's record is kept
    mtime = ckpt.stat().st_mtime_ns
    again = ensure_embedded_backbone(0.35, data_dir, overrides=QUICK, accelerator="cpu", progress=False)
    assert again == ckpt and again.stat().st_mtime_ns == mtime  # reused, not retrained
    # other settings, other cache entry; the backbone is the best validation's checkpoint, not the last epoch's
    # (monitoring the step, minimised, makes epoch 0 the best of 2)
    two_epochs = [o.replace("max_epochs=1", "max_epochs=2") for o in QUICK]
    other = ensure_embedded_backbone(0.35, data_dir, overrides=[*two_epochs, "monitor.metric=step", "monitor.mode=min"],
                                     accelerator="cpu", progress=False)
    assert other != ckpt
    chosen, last = (torch.load(f, map_location="cpu", weights_only=True) for f in (other, other.parent / "checkpoints" / "last.ckpt"))
    assert chosen["epoch"] == 0 and last["epoch"] == 1

    # the checkpoint's classifier weights land in a backbone unchanged
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    backbone = MobileNetV2Backbone(0.35, out_indices=(3, 4))
    report = load_pretrained(backbone, ckpt)
    assert report.loaded and not any(k.startswith("blocks") for k in report.missing)
    key = next(k for k in backbone.state_dict() if k.endswith("conv_dw.weight"))
    assert torch.equal(backbone.state_dict()[key], state[f"net.{key}"])


def test_pretrained_backbone_applies_only_when_it_should(make_cfg, shapes_root, tmp_path):
    overrides = ["task=detection", "model.net.width_mult=0.35", QUICK_OVERRIDE]
    cfg = make_cfg(*overrides)
    assert cfg.pretrain._target_ == "mnv2_tasks.pretrain.ensure_embedded_backbone"  # the detection default
    assert cfg.pretrain.width_mult == 0.35 and cfg.pretrain.data_dir == str(shapes_root)  # flows by interpolation
    path = _pretrained_backbone(cfg)
    assert path and str(shapes_root) in path and "_w0.35_" in path

    explicit = make_cfg(*overrides, f"model.pretrained={tmp_path / 'mine.pth'}")
    assert _pretrained_backbone(explicit) is None  # the user's file wins (loaded by the task module)

    scratch = make_cfg(*overrides[:2], "pretrain=none")
    assert _pretrained_backbone(scratch) is None

    tv = make_cfg("task=detection", "model=ssdlite_tv_mnv3", QUICK_OVERRIDE)
    assert _pretrained_backbone(tv) is None  # its network declares it takes no MobileNetV2 weights


def test_the_cache_lock_serialises_processes(tmp_path):
    """Two processes (two jobs, or two nodes on one disk) that want the same cache entry: one makes it while the other
    waits for the lock, then finds it made (the lock is portable: filelock, no fcntl)."""
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; from mnv2_tasks.launch import once_per_node\n"
            "out = Path(sys.argv[1])\n"
            "def make():\n"
            "    t0 = time.time(); time.sleep(0.6); out.write_text('x'); print('made', t0, time.time())\n"
            "once_per_node('make it', out.is_file, make, out.with_name('.lock'))\n"
            "print('done', time.time())\n")
    target = tmp_path / "x" / "entry"
    target.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    made = [o for o in outs if o[0] == "made"]
    assert len(made) == 1  # made once
    waited = next(o for o in outs if o[0] != "made")
    assert float(waited[1]) >= float(made[0][2]) - 0.01  # the other went on only after it was made
    import mnv2_tasks.launch as launch
    import mnv2_tasks.pretrain as pretrain

    assert "fcntl" not in vars(launch)  # importable where fcntl does not exist (Windows)
    assert "fcntl" not in vars(pretrain)  # importable where fcntl does not exist (Windows)


def test_the_pretraining_takes_the_task_networks_table(make_cfg, shapes_root, tmp_path):
    """A task network with its own [t, c, n, s] table (the tiny presets') is pretrained with that table, in a cache
    entry of its own, and the weights load into its backbone."""
    from conftest import TINY_BLOCKS

    cfg = make_cfg("debug=tiny_detection", "pretrain=embedded", QUICK_OVERRIDE)
    assert [list(r) for r in cfg.pretrain.inverted_residual_setting] == TINY_BLOCKS  # flows by interpolation
    tiny = _pretrained_backbone(cfg)
    paper = _pretrained_backbone(make_cfg("task=detection", "model.net.width_mult=0.35", QUICK_OVERRIDE))
    assert tiny != paper
    backbone = MobileNetV2Backbone(0.35, out_indices=(3, 4), inverted_residual_setting=TINY_BLOCKS)
    report = load_pretrained(backbone, tiny)
    assert report.loaded and not any(k.startswith("blocks") for k in report.missing) and len(backbone.blocks) == 8
