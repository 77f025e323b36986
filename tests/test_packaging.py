"""The installable tool: a wheel of the package trains from a directory outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_console_scripts_and_shipped_configs_are_declared():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = meta["project"]["scripts"]
    assert set(scripts) == {"mnv2-train", "mnv2-eval", "mnv2-export", "mnv2-predict", "mnv2-benchmark", "mnv2-browse",
                            "mnv2-convert"}
    import importlib

    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
    from mnv2_tasks.config import CONF_DIR

    # conf/ at the top of the checkout; no YAML left inside the package's source
    assert CONF_DIR == ROOT / "conf" and (CONF_DIR / "train.yaml").is_file()
    assert not list((ROOT / "mnv2_tasks").rglob("*.yaml"))
    # every subpackage is listed for the wheel (setuptools' explicit list, since conf/ is mapped into the package)
    listed = set(meta["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mnv2_tasks").rglob("__init__.py")}
    assert on_disk | {"mnv2_tasks.conf"} == listed


@pytest.mark.slow  # ~20 s: keeps `make test` near 3 minutes; CI runs it
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path, shapes_root):
    wheels, target, work, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    work.mkdir()
    # build from a copy of the sources, so that the build leaves nothing in the checkout
    import shutil

    for d in ("mnv2_tasks", "conf"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)]
    subprocess.run(build, check=True, capture_output=True, text=True, timeout=600)
    wheel = next(wheels.glob("mnv2_tasks-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    script = target / "bin" / "mnv2-train"
    assert script.is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PYTEST_CURRENT_TEST", None)
    # the installed copy, not the checkout, answers
    where = subprocess.run([sys.executable, "-c", "import mnv2_tasks, sys; print(mnv2_tasks.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.strip().startswith(str(target))
    helped = subprocess.run([sys.executable, str(script), "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "task: classification, detection, multitask, segmentation" in helped.stdout
    run = subprocess.run(
        [sys.executable, str(script), "task=classification", "trainer.max_epochs=1", "data.batch_size=16", "data.num_workers=0",
         "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"paths.data_dir={shapes_root}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = list((work / "outputs" / "classification").glob("*/metrics.json"))
    assert len(metrics) == 1 and (metrics[0].parent / "checkpoints" / "last.ckpt").is_file()
