"""Settings checked before anything runs: ``check_config(cfg)`` at the top of ``train(cfg)`` and ``evaluate(cfg)``.

A bad value (a size of -5, a batch of 0, a width outside the network's range, a threshold
outside [0, 1]) is refused before data generation, pretraining or the trainer start, with the key,
the value and the allowed range, and every bad value is reported at once.
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

__all__ = ["check_config", "ConfigError"]


class ConfigError(ValueError):
    """A setting outside its allowed range; the message names the key, the value and the range."""


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _number(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (lo < v if lo_open else lo <= v) and v <= hi


def _size(v: Any) -> bool:
    if isinstance(v, (list, tuple)) or OmegaConf.is_list(v):
        return len(v) == 2 and all(_int_at_least(8)(x) for x in v)
    return _int_at_least(8)(v)


_PRECISIONS = {"32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine"}

# key -> (test, allowed range in words); keys absent from a config are not checked
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.batch_size": (_int_at_least(1), "an integer >= 1 (images per training step)"),
    "data.eval_batch_size": (lambda v: v is None or _int_at_least(1)(v), "null or an integer >= 1"),
    "data.num_workers": (lambda v: v == "auto" or _int_at_least(0)(v),
                         "an integer >= 0 (0: load in the main process) or auto (0 on <= 2 cores, else cores - 1, at most 8)"),
    "data.image_size": (lambda v: v is None or _size(v), "an integer >= 8 or [height, width] (pixels)"),
    "data.crop_size": (_int_at_least(8), "an integer >= 8 (pixels)"),
    "data.num_classes": (lambda v: v is None or _int_at_least(1)(v), "null (from the data) or an integer >= 1"),
    "model.net.width_mult": (_number(0.1, 2.0), "a number in [0.1, 2.0] (the paper uses 0.35-1.4)"),
    "model.net.num_classes": (lambda v: v is None or _int_at_least(1)(v), "null (from the data) or an integer >= 1"),
    "model.net.output_stride": (lambda v: v in (8, 16, 32), "8, 16 or 32"),
    "model.net.iou_threshold": (_number(0.0, 1.0, lo_open=True), "a number in (0, 1]"),
    "model.net.eval_postprocess.score_thresh": (_number(0.0, 1.0), "a number in [0, 1]"),
    "model.net.eval_postprocess.nms_thresh": (_number(0.0, 1.0), "a number in [0, 1]"),
    "model.net.eval_postprocess.detections_per_img": (_int_at_least(1), "an integer >= 1"),
    "model.net.deploy_postprocess.score_thresh": (_number(0.0, 1.0), "a number in [0, 1]"),
    "model.net.deploy_postprocess.nms_thresh": (_number(0.0, 1.0), "a number in [0, 1]"),
    "model.optimizer.lr": (_number(0.0, 10.0, lo_open=True), "a number in (0, 10]"),
    "model.optimizer.weight_decay": (_number(0.0, 1.0), "a number in [0, 1]"),
    "model.seg_weight": (_number(0.0, 1e3), "a number >= 0"),
    "trainer.max_epochs": (lambda v: v is None or v == -1 or _int_at_least(0)(v), "an integer >= 0 (-1: no limit)"),
    "trainer.check_val_every_n_epoch": (lambda v: v is None or _int_at_least(1)(v), "null or an integer >= 1"),
    "quant.num_calibration_images": (_int_at_least(1), "an integer >= 1"),
    "quant.calibration_images": (_int_at_least(1), "an integer >= 1 (training images QAT's calibrated ranges are set on)"),
    "quant.ort_threads": (_int_at_least(1), "an integer >= 1"),
    "model.label_smoothing": (_number(0.0, 1.0), "a number in [0, 1) (0.1 is usual)"),
    "model.aux_weight": (_number(0.0, 1e3), "a number >= 0"),
    "model.class_weights": (lambda v: v is None or ((isinstance(v, (list, tuple)) or OmegaConf.is_list(v))
                                                    and all(_number(0.0, 1e6)(x) for x in v)),
                            "null or a list of numbers >= 0, one per class"),
    "model.scheduler.warmup_epochs": (_number(0.0, 1e6), "a number of epochs >= 0"),
    "torch_threads": (lambda v: v is None or _int_at_least(1)(v), "null (one per core) or an integer >= 1"),
    "seed": (lambda v: v is None or (_int_at_least(0)(v) and v < 2**32), "null or an integer in [0, 2**32)"),
    "trainer.precision": (lambda v: str(v) in _PRECISIONS, f"one of {sorted(_PRECISIONS)}"),
    "trainer.devices": (lambda v: v == "auto" or _int_at_least(1)(v) or v == -1 or OmegaConf.is_list(v) or isinstance(v, list),
                        "auto, -1 (all), an integer >= 1 or a list of device indices"),
    "quant.freeze_bn_epoch": (lambda v: v is None or _int_at_least(0)(v), "null or an integer >= 0"),
    "quant.freeze_observer_epoch": (lambda v: v is None or _int_at_least(0)(v), "null or an integer >= 0"),
}


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every setting outside its allowed range (see ``RULES``)."""
    problems = []
    for key, (ok, allowed) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here is checked where it is used
            continue
        if value is None and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        if not ok(value):
            problems.append(f"{key}={value!r}: must be {allowed}")
    problems += _across_keys(cfg)
    problems += _data_for_task(cfg)
    if problems:
        raise ConfigError("invalid settings (python train.py ... key=value):\n  " + "\n  ".join(problems))


def _across_keys(cfg: DictConfig) -> list[str]:
    """Settings that are wrong together: a one-class classifier, class weights that do not match the classes,
    label smoothing of 1 (every target uniform)."""
    def get(key):
        try:
            return OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - unresolvable here: checked where it is used
            return None

    out = []
    n, task = get("model.net.num_classes"), get("task")
    if task == "classification" and isinstance(n, int) and n < 2:
        out.append(f"model.net.num_classes={n}: a classifier needs at least 2 classes (the data has "
                   f"{get('data.num_classes')}); with one class every prediction is right")
    weights = get("model.class_weights")
    if weights is not None and isinstance(n, int) and len(weights) != n:
        out.append(f"model.class_weights has {len(weights)} values for model.net.num_classes={n}: give one per class")
    if get("model.label_smoothing") == 1.0:
        out.append("model.label_smoothing=1.0: the targets would carry no label at all; use a value in [0, 1)")
    return out


def _data_for_task(cfg: DictConfig) -> list[str]:
    """A data module that does not serve the task (``task=detection data=voc``, VOC's masks): named, with the data
    configs that do (each data module declares its ``tasks``)."""
    from hydra.utils import get_class

    from .config import CONF_DIR

    task, target = cfg.get("task"), OmegaConf.select(cfg, "data._target_", default=None)
    if not task or not target:
        return []
    try:
        tasks = getattr(get_class(target), "tasks", ())
    except Exception:  # noqa: BLE001 - an unknown class fails where Hydra instantiates it, with Hydra's message
        return []
    if not tasks or task in tasks:
        return []
    serving = []
    for f in sorted((CONF_DIR / "data").glob("*.yaml")):
        other = OmegaConf.load(f).get("_target_")
        try:
            if other and task in getattr(get_class(other), "tasks", ()):
                serving.append(f"data={f.stem}")
        except Exception:  # noqa: BLE001
            continue
    return [f"data._target_={target}: this data module serves {list(tasks)}, not task={task}; task={task} reads "
            f"{', '.join(serving) or 'no data config here'}"]
