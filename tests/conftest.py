"""Shared fixtures: the embedded data set (generated once per session), composed configs, and the tiny
trained runs (``conf/debug/tiny_*.yaml``) that many tests read, each trained once per session.

A test that reads a shared run must not write into its directory: evaluation, export and QAT runs
point their own ``paths.output_dir`` (``make_cfg`` gives every test its own) or ``out_dir`` elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

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


@dataclass(frozen=True)
class Run:
    """A finished tiny training run: its preset overrides, directory and ``metrics.json``."""

    overrides: tuple[str, ...]
    dir: Path
    returned: dict  # what train(cfg) returned

    @property
    def metrics(self) -> dict:
        return json.loads((self.dir / "metrics.json").read_text())

    @property
    def last(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"


def train_once(tmp_path_factory, shapes_root: Path, name: str, *overrides: str) -> Run:
    from mnv2_tasks.train import train

    cfg = compose_cfg(list(overrides), tmp_path_factory.mktemp(name) / "run", shapes_root)
    returned = train(cfg)
    return Run(tuple(overrides), Path(cfg.paths.output_dir), returned)


# the tiny presets (conf/debug/): every test that needs "a trained classifier" reads the same one
# their MobileNetV2 table (conf/debug/blocks/tiny.yaml), for the networks tests build themselves
TINY_BLOCKS = [list(row) for row in OmegaConf.load(Path(CONF_DIR) / "debug" / "blocks" / "tiny.yaml").inverted_residual_setting]
TINY_CLS = ("debug=tiny_classification",)
TINY_DET = ("debug=tiny_detection",)
TINY_SEG = ("debug=tiny_segmentation",)
TINY_MT = ("debug=tiny_multitask",)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, shapes_root) -> Run:
    return train_once(tmp_path_factory, shapes_root, "tiny_classifier", *TINY_CLS)


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory, shapes_root) -> Run:
    return train_once(tmp_path_factory, shapes_root, "tiny_detector", *TINY_DET)


@pytest.fixture(scope="session")
def tiny_segmenter(tmp_path_factory, shapes_root) -> Run:
    return train_once(tmp_path_factory, shapes_root, "tiny_segmenter", *TINY_SEG)


@pytest.fixture(scope="session")
def tiny_multitask(tmp_path_factory, shapes_root) -> Run:
    return train_once(tmp_path_factory, shapes_root, "tiny_multitask", *TINY_MT)


def qat_overrides(from_ckpt: Path, *more: str) -> tuple[str, ...]:
    """One epoch of QAT from a float checkpoint, BatchNorm frozen from the start, observers after the first epoch."""
    return ("quant=qat", f"quant.from_ckpt={from_ckpt}", "quant.freeze_bn_epoch=0", "quant.freeze_observer_epoch=1",
            "trainer.max_epochs=1", *more)


@pytest.fixture(scope="session")
def qat_all_targets(tmp_path_factory, shapes_root, tiny_detector) -> Run:
    """The tiny detector through one QAT epoch, written and evaluated for every deployment target."""
    return train_once(tmp_path_factory, shapes_root, "qat_all_targets", *TINY_DET,
                      *qat_overrides(tiny_detector.last, "quant.targets=[all]"))


# under pytest-xdist (make test / test-slow: --dist loadfile) a test file runs in one worker: the tests that read
# qat_all_targets all live in test_deploy_targets.py, so the run is made once
if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker: the workers share the cores
    import torch

    torch.set_num_threads(1)

os.environ.setdefault("MNV2_TASKS_DATA", str(Path(os.environ.get("TMPDIR", "/tmp")) / "mnv2_tasks_test_data"))
