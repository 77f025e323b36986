"""A pretrained backbone for the embedded default, made on this machine instead of downloaded.

Detection and segmentation from scratch spend most of a short budget learning what a shape *is*;
on real data everyone starts from ImageNet weights for that reason. Nothing can be downloaded
here, so the embedded default makes its own: a MobileNetV2 classifier of the task's width is
trained on the embedded ImageFolder shapes (``task=classification`` with a few overrides), once,
and cached next to the data set like the data set itself. ``train(cfg)`` then loads it as
``model.pretrained``. The same width, overrides, seed and data set always give the same cache entry.

Config: ``pretrain=embedded`` (the detection and segmentation defaults; ``conf/pretrain/embedded.yaml``
takes the width and the data directory from the run by interpolation), ``pretrain=none`` to train
from scratch; an explicit ``model.pretrained=/path/weights.pth`` always wins, and a network that
declares it takes no MobileNetV2 weights (``TaskNet.takes_mobilenetv2_weights``) is not pretrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from .launch import host_tag, once_per_node, single_process_env

log = logging.getLogger(__name__)

__all__ = ["ensure_embedded_backbone"]

BACKBONE_FILE = "backbone.ckpt"


def ensure_embedded_backbone(
    width_mult: float,
    data_dir: str | Path,
    overrides: Sequence[str] = ("task=classification",),
    seed: int = 0,
    accelerator: str = "auto",
    torch_threads: int | None = None,
    progress: bool = True,
    inverted_residual_setting: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Path of a MobileNetV2 classifier checkpoint of ``width_mult`` (and of the task network's ``[t, c, n, s]``
    table ``inverted_residual_setting``; ``None``: the paper's) trained on the embedded shapes.

    Trained through ``train(cfg)`` with ``overrides`` on first use (its run directory, with
    ``metrics.json`` and ``curves.png``, is kept in the cache), then reused; the checkpoint of the best
    validation top-1 is the backbone. The cache lives in
    ``<data_dir>/pretrained/`` so that it goes wherever the data set goes.
    """
    from omegaconf import OmegaConf, open_dict

    from .config import compose_train_config
    from .data.shapes import VERSION

    data_dir = Path(data_dir)
    cfg = compose_train_config([*overrides, "pretrain=none"])
    with open_dict(cfg):
        cfg.model.net.width_mult = float(width_mult)
        if inverted_residual_setting is not None:  # only then in the cache key: the paper's table keeps its entries
            cfg.model.net.inverted_residual_setting = [[int(v) for v in row] for row in inverted_residual_setting]
        cfg.seed = seed
    # the cache key: the composed run itself (so that editing conf/ makes a new entry), minus where and how it runs
    recipe = OmegaConf.to_container(cfg, resolve=False)
    for k in ("paths", "torch_threads", "hydra"):
        recipe.pop(k, None)
    for k in ("accelerator", "devices", "enable_progress_bar"):
        recipe.get("trainer", {}).pop(k, None)
    key = json.dumps({"version": VERSION, "recipe": recipe}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    entry = data_dir / "pretrained" / f"mnv2_w{float(width_mult):g}_{digest}"
    ckpt = entry / BACKBONE_FILE
    once_per_node(f"pretrain the width-{float(width_mult):g} backbone ({entry})", ckpt.is_file,
                  lambda: _pretrain(cfg, key, entry, data_dir, accelerator, progress, torch_threads),
                  lock=data_dir / "pretrained" / f".{entry.name}.lock")
    return ckpt


def _pretrain(cfg, key: str, entry: Path, data_dir: Path, accelerator: str, progress: bool, torch_threads) -> None:
    """Train the classifier into a folder of this process's own and rename it to ``entry`` when it is done. In one
    process, with the launcher's variables hidden: a nested run joined to the job's process group would hang."""
    from omegaconf import open_dict

    from .train import train

    log.info("pretraining a width-%g MobileNetV2 on the embedded ImageFolder shapes (once; cached in %s)",
             cfg.model.net.width_mult, entry)
    run_dir = entry.with_name(f"{entry.name}.run-{host_tag()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(run_dir)
        cfg.trainer.accelerator = accelerator
        cfg.trainer.devices = 1
        cfg.trainer.strategy = "auto"
        cfg.trainer.num_nodes = 1
        cfg.trainer.enable_progress_bar = progress
        cfg.torch_threads = torch_threads
    if cfg.task != "classification":
        raise ValueError(f"pretrain overrides must compose a classification run, got task={cfg.task}")
    with single_process_env():
        metrics = train(cfg)
    # the classifier of the best validation top-1 (on the classification shapes, which detection and
    # segmentation never evaluate on), as a published ImageNet checkpoint is the recipe's chosen one
    chosen = Path(metrics.get("best_ckpt") or run_dir / "checkpoints" / "last.ckpt")
    if not chosen.is_file():
        raise RuntimeError(f"the embedded pretraining wrote no {chosen}")
    shutil.copyfile(chosen, run_dir / BACKBONE_FILE)
    (run_dir / "key.json").write_text(key)
    if entry.exists():  # an unfinished entry (no backbone file): ready() was false under the lock
        shutil.rmtree(entry, ignore_errors=True)
    os.replace(run_dir, entry)
    log.info("embedded pretraining done: top-1 %.3f; backbone %s", metrics.get("top1", float("nan")), entry / BACKBONE_FILE)
