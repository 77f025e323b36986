"""Shared fixtures: the embedded data set (generated once per session) and composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# small but real: every loader runs on files in the real formats
TEST_SHAPES_KW = dict(num_train=24, num_val=12, image_size=96, cls_per_class_train=12, cls_per_class_val=6, cls_image_size=48)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    from mnv2_tasks.data.shapes import ensure_shapes

    return ensure_shapes(tmp_path_factory.mktemp("data") / "shapes-v2", **TEST_SHAPES_KW)


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/train.yaml`` as ``python train.py <overrides>`` would, pointed at tmp dirs, on the CPU."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(data_dir)
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
    return cfg


@pytest.fixture
def make_cfg(tmp_path, shapes_root):
    def _make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_cfg(list(overrides), tmp_path / "run", shapes_root, config_name)

    return _make


os.environ.setdefault("MNV2_TASKS_DATA", str(Path(os.environ.get("TMPDIR", "/tmp")) / "mnv2_tasks_test_data"))
