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
