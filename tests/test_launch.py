"""Cluster launches: one run directory per job on every rank, ``ckpt_path=last``, work done once per node, and
real ``torchrun`` launches on 127.0.0.1 (gloo): one run directory, DDP metrics equal to one process's on the same
checkpoint, a killed job that resumes at the right step, two nodes simulated on one machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mnv2_tasks import launch
from mnv2_tasks.evaluate import evaluate
from mnv2_tasks.resume import resolve_ckpt_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables, and no name chosen yet in this process."""
    for k in list(os.environ):
        if k in launch._LAUNCH_VARS or k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    launch._CHOSEN.clear()
    yield monkeypatch
    launch._CHOSEN.clear()


def test_run_name_comes_from_the_job_not_the_clock(clean_env, tmp_path):
    assert launch.run_name("mine") == "mine"
    clean_env.setenv("SLURM_JOB_ID", "4242")
    assert launch.run_name() == "slurm-4242"  # a requeued job keeps its id, hence its folder
    launch._CHOSEN.clear()
    clean_env.setenv("SLURM_ARRAY_JOB_ID", "4240")
    clean_env.setenv("SLURM_ARRAY_TASK_ID", "3")
    clean_env.setenv("SLURM_STEP_ID", "2")
    assert launch.run_name() == "slurm-4240_3-step2"
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_STEP_ID"):
        clean_env.delenv(k)
    launch._CHOSEN.clear()
    clean_env.setenv("TORCHELASTIC_RUN_ID", "job7")
    assert launch.run_name() == "torchrun-job7"


def test_torchrun_without_an_id_names_the_agent_on_one_node_and_refuses_several(clean_env):
    clean_env.setenv("TORCHELASTIC_RUN_ID", "none")
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    name = launch.run_name()
    assert name.endswith(f"torchrun{os.getppid()}")  # every worker of one agent gets the same name
    launch._CHOSEN.clear()
    clean_env.setenv("LOCAL_WORLD_SIZE", "1")  # two nodes
    with pytest.raises(launch.LaunchError, match="run_name=<name>.*--rdzv-id"):
        launch.run_name()


def test_one_process_names_from_the_clock_are_claimed_once(clean_env, tmp_path):
    first = launch.run_name(None, str(tmp_path))
    launch._CHOSEN.clear()
    second = launch.run_name(None, str(tmp_path))  # another job in the same second gets its own folder
    assert first != second and (tmp_path / first).is_dir() and (tmp_path / second).is_dir()
    assert launch.run_name(None, str(tmp_path)) == second  # decided once per process


def test_ckpt_path_last_is_the_newest_of_the_run_or_a_fresh_start(tmp_path):
    assert resolve_ckpt_path("last", tmp_path) is None
    assert resolve_ckpt_path("/a/b.ckpt", tmp_path) == "/a/b.ckpt"
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert resolve_ckpt_path("last", tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_2.ckpt"  # Lightning's SLURM requeue checkpoint, newer
    hpc.write_bytes(b"x")
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert resolve_ckpt_path("last", tmp_path) == str(hpc)


def test_once_per_node_makes_on_local_rank_zero_while_the_others_wait(clean_env, tmp_path):
    target = tmp_path / "made"
    calls = []

    def make():
        time.sleep(0.3)
        calls.append(1)
        target.write_text("ok")

    clean_env.setenv("RANK", "1")
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    # this process is local rank 1: it must not make, only wait; a thread plays local rank 0
    maker = threading.Timer(0.2, lambda: target.write_text("ok"))
    maker.start()
    launch.once_per_node("make it", target.is_file, make, tmp_path / "lock", poll_s=0.05)
    assert target.read_text() == "ok" and not calls
    with pytest.raises(launch.LaunchError, match="waited 0 s for local rank 0 to make the other"):
        launch.once_per_node("make the other", lambda: False, make, tmp_path / "lock", timeout_s=0.1, poll_s=0.02)
    clean_env.setenv("RANK", "0")
    clean_env.setenv("LOCAL_RANK", "0")
    other = tmp_path / "other"
    launch.once_per_node("make", other.is_file, lambda: other.write_text("x"), tmp_path / "lock")
    assert other.is_file()


def test_single_process_env_hides_the_launcher(clean_env):
    clean_env.setenv("RANK", "3")
    clean_env.setenv("SLURM_NTASKS", "8")
    with launch.single_process_env():
        assert "RANK" not in os.environ and "SLURM_NTASKS" not in os.environ
        assert launch.ranks() == (0, 0, 1)
    assert os.environ["RANK"] == "3" and os.environ["SLURM_NTASKS"] == "8"


# ---- real launches ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cwd: Path, data_dir: Path, args: list[str], *, nproc: int = 2, nnodes: int = 1, node_rank: int = 0,
              port: int | None = None, run_id: str | None = None) -> subprocess.Popen:
    rdzv = ([f"--rdzv-id={run_id}"] if run_id else [])
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node-rank={node_rank}",
           f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={port or _free_port()}", *rdzv,
           str(ROOT / "train.py"), "trainer=ddp", f"trainer.devices={nproc}", f"trainer.num_nodes={nnodes}",
           "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
           f"paths.data_dir={data_dir}", "data.num_workers=0", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun starts each worker in a session of its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _only_run(cwd: Path, task: str) -> Path:
    runs = [p for p in (cwd / "outputs" / task).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"one run directory for the job, found {[p.name for p in runs]}"
    return runs[0]


@pytest.mark.slow
def test_torchrun_detection_one_run_dir_and_metrics_of_one_process(tmp_path, shapes_root, make_cfg):
    args = ["debug=tiny_detection", "trainer.max_epochs=1"]
    out = _finish(_torchrun(tmp_path, shapes_root, args))
    run = _only_run(tmp_path, "detection")
    assert (run / "train.log").is_file() and (run / "train_rank1.log").is_file()  # one log per rank, one folder
    ddp = json.loads((run / "metrics.json").read_text())
    single = evaluate(make_cfg(*args, f"ckpt={run}/checkpoints/last.ckpt", config_name="eval"))
    assert ddp["num_images"] == single["num_images"] == 12  # every validation image once, split over two ranks
    for key in ("mAP", "mAP50", "AR100"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in out


@pytest.mark.slow
def test_torchrun_killed_job_relaunched_with_ckpt_path_last_resumes_at_the_right_step(tmp_path, shapes_root, make_cfg):
    # small batches: epochs long enough (a second or so) for the kill to land inside the run
    args = ["debug=tiny_classification", "data.batch_size=2", "trainer.max_epochs=4", "run_name=requeued", "ckpt_path=last"]
    run = tmp_path / "outputs" / "classification" / "requeued"
    last = run / "checkpoints" / "last.ckpt"
    proc = _torchrun(tmp_path, shapes_root, args)
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.is_file(), proc.communicate()[0][-4000:] if proc.poll() is not None else "no checkpoint in 300 s"
    _kill_tree(proc.pid)  # the node is gone: agent and workers at once
    proc.communicate()
    killed_at = torch.load(last, map_location="cpu", weights_only=True)
    assert killed_at["epoch"] < 3, "the kill came after the last epoch: nothing left to resume"

    out = _finish(_torchrun(tmp_path, shapes_root, args))
    assert f"ckpt_path=last: resuming from {last}" in out
    final = torch.load(last, map_location="cpu", weights_only=True)
    steps_per_epoch = killed_at["global_step"] // (killed_at["epoch"] + 1)
    assert final["epoch"] == 3 and final["global_step"] == 4 * steps_per_epoch  # no epoch lost, none trained twice
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ended"] == "completed" and metrics["epochs"] == 4
    assert _only_run(tmp_path, "classification") == run
    single = evaluate(make_cfg("debug=tiny_classification", f"ckpt={last}", config_name="eval"))  # the same, in one process
    assert metrics["num_samples"] == single["num_samples"]
    assert metrics["top1"] == pytest.approx(single["top1"], abs=1e-6) and metrics["top5"] == pytest.approx(single["top5"], abs=1e-6)


@pytest.mark.slow
def test_two_nodes_on_one_machine_share_one_run_and_pretrain_once(tmp_path, shapes_root):
    data = tmp_path / "data"  # a fresh data dir: the embedded pretraining is made during the launch, once
    data.mkdir()
    (data / "imagefolder").symlink_to(shapes_root / "imagefolder")
    for name in ("coco", "voc", "COMPLETE.json"):
        if (shapes_root / name).exists():
            (data / name).symlink_to(shapes_root / name)
    port = _free_port()
    args = ["debug=tiny_classification", "trainer.max_epochs=1", "run_name=two_nodes", "pretrain=embedded",
            'pretrain.overrides=["task=classification","debug=tiny_classification","trainer.max_epochs=1"]']
    nodes = [_torchrun(tmp_path, data, args, nproc=1, nnodes=2, node_rank=r, port=port) for r in (0, 1)]
    outs = [_finish(p) for p in nodes]
    run = _only_run(tmp_path, "classification")
    assert run.name == "two_nodes" and (run / "metrics.json").is_file()
    assert sum(o.count("pretraining a width-0.35 MobileNetV2") for o in outs) == 1  # one node made it, under the lock
    assert len(list((data / "pretrained").glob("mnv2_w0.35_*/backbone.ckpt"))) == 1
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1]


def test_preflight_runs_once_per_job_and_the_other_ranks_read_it(clean_env, tmp_path, caplog):
    from mnv2_tasks.data.preflight import PreflightItem, run_preflight_once

    clean_env.setenv("MNV2_TASKS_DATA", str(tmp_path / "cache"))
    good = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(good)
    items = [PreflightItem(0, good), PreflightItem(1, tmp_path / "missing.jpg")]
    for k, v in {"TORCHELASTIC_RUN_ID": "job9", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}.items():
        clean_env.setenv(k, v)
    first = run_preflight_once(items, "the set")
    assert list(first) == [1]
    (written,) = (tmp_path / "cache" / "preflight").glob("*.json")
    clean_env.setenv("RANK", "1")
    clean_env.setenv("LOCAL_RANK", "1")
    good.unlink()  # rank 1 does not check the files again: it reads rank 0's answer
    with caplog.at_level("INFO"):
        assert run_preflight_once(items, "the set") == first
    assert "checked once for job torchrun-job9" in caplog.text
    clean_env.setenv("TORCHELASTIC_RUN_ID", "job10")  # another job checks afresh (and now finds both files bad)
    clean_env.setenv("RANK", "0")
    clean_env.setenv("LOCAL_RANK", "0")
    assert sorted(run_preflight_once(items, "the set")) == [0, 1]


def test_lr_follows_the_global_batch_when_asked(clean_env, make_cfg, caplog):
    from mnv2_tasks.config import scale_lr

    cfg = make_cfg("debug=tiny_classification", "trainer=ddp", "trainer.devices=2", "trainer.num_nodes=2",
                   "+trainer.accumulate_grad_batches=2", "lr_scaling.rule=linear", "lr_scaling.base_batch_size=16")
    lr = cfg.model.optimizer.lr
    with caplog.at_level("INFO"):
        scale_lr(cfg)
    assert cfg.model.optimizer.lr == pytest.approx(lr * 8 * 2 * 2 * 2 / 16)  # 8 per process x 4 processes x 2
    assert "global batch of 64 (8 per process x 4 processes x 2 accumulated; tuned for 16)" in caplog.text
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "16")  # launched by torchrun / srun: the launcher's world size wins
    cfg = make_cfg("debug=tiny_classification", "lr_scaling.rule=sqrt")
    lr = cfg.model.optimizer.lr
    scale_lr(cfg)
    assert cfg.model.optimizer.lr == pytest.approx(lr * 4)  # base: one process's batch; sqrt(16)
    cfg = make_cfg("debug=tiny_classification")  # rule null: as written
    lr = cfg.model.optimizer.lr
    scale_lr(cfg)
    assert cfg.model.optimizer.lr == lr
