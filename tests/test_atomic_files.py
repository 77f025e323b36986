"""Writes that cannot be torn: a checkpoint interrupted mid-write, or out of space, leaves the previous one loadable."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnv2_tasks.atomic_files import AtomicCheckpointIO, WriteError, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def _state(value: float, mb: int = 1) -> dict:
    return {"state_dict": {"w": torch.full((mb * 2**18,), value)}, "epoch": int(value)}


def test_a_failed_write_keeps_the_previous_checkpoint_and_says_why(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_state(1.0), path)

    def full(fd):  # the disk fills up as the new file is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=r"last.ckpt: disk full while writing 1.0 MB \(the previous file is intact\)"):
        io.save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_a_write_killed_midway_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A process killed (SIGKILL) while it writes the new file: the old one is still there, whole and loadable."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_state(1.0), path)
    writer = (
        "import builtins, sys, time, torch\n"
        "from mnv2_tasks.atomic_files import AtomicCheckpointIO\n"
        "real_open = builtins.open\n"
        "class Slow:\n"  # a file whose write stops halfway and hangs, as a slow disk would when the kill comes
        "    def __init__(self, f): self.f = f\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *a): self.f.close()\n"
        "    def write(self, b): self.f.write(b[: len(b) // 2]); self.f.flush(); print('half', flush=True); time.sleep(60)\n"
        "    def __getattr__(self, n): return getattr(self.f, n)\n"
        "builtins.open = lambda p, m='r', *a, **k: Slow(real_open(p, m, *a, **k)) if 'w' in m else real_open(p, m, *a, **k)\n"
        f"AtomicCheckpointIO().save_checkpoint({{'state_dict': {{'w': torch.full((2**20,), 2.0)}}, 'epoch': 2}}, {str(path)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "half"  # the new file is half written
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    partial = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(partial) == 1 and partial[0].name.startswith(".last.ckpt.")  # the torn file is the temporary one
    with pytest.raises(Exception):  # and it is torn: not a loadable checkpoint
        torch.load(partial[0], weights_only=True)


def test_training_writes_checkpoints_through_the_atomic_io(make_cfg, monkeypatch):
    from mnv2_tasks import atomic_files
    from mnv2_tasks.train import train

    written = []
    real = atomic_files.atomic_write
    monkeypatch.setattr(atomic_files, "atomic_write", lambda p, d: written.append(Path(p).name) or real(p, d))
    cfg = make_cfg("debug=tiny_classification", "trainer.max_epochs=1", "data.eval_batch_size=8")
    train(cfg)
    assert "last.ckpt" in written and any(n.startswith("best-") for n in written)


def test_a_destination_that_cannot_be_replaced_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "x.ckpt").mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(WriteError, match=r"x.ckpt: cannot write .*paths.output_dir"):
        atomic_write(tmp_path / "x.ckpt", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]
