"""Composing the package's Hydra configuration outside ``python train.py`` (tools, nested runs, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["CONF_DIR", "compose_train_config"]



def _conf_dir() -> Path:
    """``conf/`` at the top of a checkout (and of an editable install), or ``mnv2_tasks/conf`` inside a wheel."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return shipped if (shipped / "train.yaml").is_file() else package.parent / "conf"


CONF_DIR = _conf_dir()


def _register_resolvers() -> None:
    from .launch import register_resolvers

    register_resolvers()  # ${mnv2_run_name:...} of conf/hydra/default.yaml, before any composition


_register_resolvers()


def compose_train_config(overrides: Sequence[str], config_name: str = "train"):
    """``conf/<config_name>.yaml`` composed with ``overrides``, as ``python train.py <overrides>`` would (no run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside @hydra.main: the app's own config search path
        return compose(config_name=config_name, overrides=list(overrides))
    if not (CONF_DIR / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(f"{CONF_DIR / (config_name + '.yaml')} not found: the package's conf/ directory is missing; "
                                "run from a checkout (or an installed wheel that ships it)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def classes_from_data(cfg, datamodule) -> None:
    """``data.num_classes: null``: the data's own count (categories + background, class folders, ...), written into
    ``cfg`` so that everything interpolating it (``model.net.num_classes``) and the recorded config read it."""
    import logging

    from omegaconf import open_dict

    if "num_classes" not in cfg.data or cfg.data.num_classes is not None:
        return
    n = int(datamodule.num_classes)
    with open_dict(cfg):
        cfg.data.num_classes = n
    names = datamodule.class_names
    logging.getLogger(__name__).info("data.num_classes=%d from the data (%s)", n, ", ".join(map(str, names or []))[:300])


def world_size_of(trainer_cfg) -> int:
    """The processes a trainer config (or the launcher around it: torchrun, srun) trains on, before any starts."""
    from .launch import ranks

    launched = ranks()[2]
    if launched > 1:
        return launched
    devices, nodes = trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, int) and devices > 0:
        per_node = devices
    elif isinstance(devices, str) and devices.isdigit():
        per_node = int(devices)
    elif devices not in ("auto", -1, "-1", None):  # a list of device indices
        per_node = len(list(devices))
    else:  # auto / -1: every GPU there is, else one process
        import torch

        accelerator = str(trainer_cfg.get("accelerator", "auto"))
        per_node = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else 1
    return max(1, per_node) * nodes


def scale_lr(cfg) -> None:
    """``lr_scaling.rule``: ``model.optimizer.lr`` scaled to the global batch (``conf/train.yaml``), written into ``cfg``
    (so that checkpoints record the lr that ran) and logged with the numbers it came from."""
    import logging
    import math

    from omegaconf import open_dict

    rule = (cfg.get("lr_scaling") or {}).get("rule")
    if not rule or "optimizer" not in cfg.model or cfg.model.optimizer.get("lr") is None:
        return
    world = world_size_of(cfg.trainer)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    per_process = int(cfg.data.batch_size)
    global_batch, base = per_process * world * accumulate, int(cfg.lr_scaling.base_batch_size)
    factor = global_batch / base if rule == "linear" else math.sqrt(global_batch / base)
    lr = float(cfg.model.optimizer.lr)
    with open_dict(cfg):
        cfg.model.optimizer.lr = lr * factor
    logging.getLogger(__name__).info(
        "lr_scaling=%s: model.optimizer.lr %g -> %g for a global batch of %d (%d per process x %d processes x %d "
        "accumulated; tuned for %d)", rule, lr, lr * factor, global_batch, per_process, world, accumulate, base)


def settings_for_weights(cfg, path=None) -> None:
    """``model.pretrained=<Keras .h5>`` (or ``path``, the weights ``tools/eval.py`` evaluates): Keras's weights were trained with TensorFlow's ``same`` padding on inputs scaled
    to [-1, 1], so the network is built with ``model.net.padding=tf_same`` and the data normalised with mean = std =
    0.5 (``data.mean``, ``data.std``), unless set otherwise; both are written into ``cfg`` (hence recorded in
    checkpoints and exported files) and logged. A network config without a ``padding`` setting keeps its own."""
    import logging

    from omegaconf import open_dict

    from .models.keras_weights import KERAS_MEAN, KERAS_STD, is_keras_h5

    path = path or cfg.model.get("pretrained")
    if not path or not is_keras_h5(path):
        return
    said = []
    with open_dict(cfg):
        if "padding" in cfg.model.net and cfg.model.net.padding != "tf_same":
            cfg.model.net.padding = "tf_same"
            said.append("model.net.padding=tf_same")
        if cfg.data.get("mean") is None and cfg.data.get("std") is None:
            cfg.data.mean, cfg.data.std = list(KERAS_MEAN), list(KERAS_STD)
            said.append("data.mean=data.std=[0.5, 0.5, 0.5]")
    if said:
        logging.getLogger(__name__).info("%s is a Keras file, trained with TensorFlow's padding on [-1, 1] "
                                         "inputs: %s", path, ", ".join(said))
