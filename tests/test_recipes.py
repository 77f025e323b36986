"""The cluster launch recipes (examples/, conf/hydra/launcher/): each script runs (dry) and its command composes into a
valid config; the TrainJob manifest parses and its arguments compose; the SLURM launcher config is sized from the
trainer config."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mnv2_tasks.config_check import check_config

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def _compose(overrides: list[str], hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def _overrides_after(command: list[str], marker: str) -> list[str]:
    return command[command.index(marker) + 1:]


def _dry_run(script: Path, **env: str) -> list[str]:
    out = subprocess.run(["bash", str(script)], env={**os.environ, "MNV2_DRY_RUN": "1", **env}, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout)


def _checked(overrides: list[str]):
    cfg = _compose(overrides)
    check_config(cfg)
    return cfg


def test_sbatch_script_runs_srun_with_a_valid_config():
    script = ROOT / "examples" / "slurm" / "train.sbatch"
    missing = subprocess.run(["bash", str(script)], env={**os.environ, "MNV2_DRY_RUN": "1", "COCO_ROOT": ""},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "set COCO_ROOT" in missing.stderr  # says what to set
    cmd = _dry_run(script, COCO_ROOT="/data/coco", SLURM_JOB_NUM_NODES="3", SLURM_NTASKS_PER_NODE="8")
    assert cmd[:3] == ["srun", "python", "train.py"]
    cfg = _checked(_overrides_after(cmd, "train.py"))
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.data.root) == (8, 3, "/data/coco")
    assert cfg.ckpt_path == "last" and cfg.lr_scaling.rule == "linear"
    headers = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --requeue" in headers and any("--signal=SIGUSR1@" in h for h in headers)


def test_torchrun_script_names_the_job_and_composes():
    script = ROOT / "examples" / "torchrun" / "train.sh"
    cmd = _dry_run(script, COCO_ROOT="/data/coco", MASTER_ADDR="10.0.0.1", JOB_ID="ssdlite-1", NODE_RANK="1")
    assert cmd[0] == "torchrun" and "--rdzv-id=ssdlite-1" in cmd and "--node-rank=1" in cmd
    cfg = _checked(_overrides_after(cmd, "train.py"))
    assert cfg.trainer.num_nodes == 2 and cfg.ckpt_path == "last"


def test_kubeflow_trainjob_parses_and_its_arguments_compose():
    job = yaml.safe_load((ROOT / "examples" / "kubeflow" / "trainjob.yaml").read_text())
    assert job["apiVersion"].startswith("trainer.kubeflow.org/") and job["kind"] == "TrainJob"
    trainer = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["command"][0] == "torchrun" and trainer["command"][-1] == "mnv2_tasks.cli"
    overrides = [a for a in trainer["args"] if not a.startswith("hydra.")]
    cfg = _checked(overrides)
    assert cfg.trainer.num_nodes == trainer["numNodes"] and cfg.trainer.devices == trainer["numProcPerNode"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == cfg.trainer.devices


def test_slurm_launcher_config_is_sized_from_the_trainer():
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401 - the dev extra has it (mnv2_tasks[cluster])

    cfg = _compose(["hydra/launcher=slurm", "task=detection", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                    "hydra.launcher.partition=gpu"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.max_num_timeout > 0 and launcher.partition == "gpu"
