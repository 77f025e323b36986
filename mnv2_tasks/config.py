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
