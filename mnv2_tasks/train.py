"""``train(cfg)``: build data, model, callbacks, loggers and trainer from a composed config; fit; report."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .checkpoint import check_compatible
from .plots import plot_training_curves
from .pretrain import MOBILENETV2_BUILDERS

log = logging.getLogger(__name__)

__all__ = ["train", "optional_tensorboard_logger"]


def optional_tensorboard_logger(save_dir: str, **kwargs):
    """A TensorBoard logger when tensorboard is installed, else ``None`` (CSV logs are always written)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=save_dir, **kwargs)


def _instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a config group (``callbacks``, ``logger``), skipping nulls."""
    if not group:
        return []
    built = [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]
    return [b for b in built if b is not None]


def _jsonable(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _resolve_pretrain(cfg: DictConfig) -> None:
    """``pretrain=embedded``: make (or reuse) the embedded pretrained backbone and set ``model.pretrained`` to it.

    An explicit ``model.pretrained`` wins, and a run that resumes (``ckpt_path``) or fine-tunes
    (``quant.from_ckpt``) a checkpoint needs none; a network not built by one of
    ``MOBILENETV2_BUILDERS`` (e.g. torchvision's MobileNetV3 detector) trains from scratch, as it
    cannot take the weights.
    """
    spec = cfg.get("pretrain")
    if not spec or cfg.model.get("pretrained"):
        return
    if cfg.get("ckpt_path") or (cfg.get("quant") or {}).get("from_ckpt"):
        return  # every weight comes from that checkpoint
    net = cfg.model.get("net", {})
    width, target = net.get("width_mult"), str(net.get("_target_", ""))
    if width is None or target not in MOBILENETV2_BUILDERS:
        log.info("pretrain: %s has no MobileNetV2 backbone to pretrain; training from scratch", target or "the model")
        return
    path = instantiate(spec, width_mult=float(width), data_dir=cfg.paths.data_dir,
                       accelerator=cfg.trainer.get("accelerator", "auto"), torch_threads=cfg.get("torch_threads"),
                       progress=bool(cfg.trainer.get("enable_progress_bar", True)))
    with open_dict(cfg):
        cfg.model.pretrained = str(path)
    log.info("pretrain: backbone weights from %s", path)


def train(cfg: DictConfig) -> dict:
    """Train and evaluate as ``cfg`` says; write ``metrics.json`` and ``curves.png`` to the run dir; return the metrics."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    _resolve_pretrain(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    module.net_spec = OmegaConf.to_container(cfg.model.net, resolve=True)
    module.input_spec = {"image_size": cfg.data.get("image_size") or cfg.data.get("size")}
    if cfg.get("ckpt_path"):
        check_compatible(cfg.ckpt_path, module.task_name, module.net_spec, quant=(cfg.get("quant") or {}).get("mode"))

    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(out_dir))
    if trainer.is_global_zero:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = module.final_metrics()
    if metrics is None or trainer.current_epoch % max(1, trainer.check_val_every_n_epoch) != 0:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics = module.final_metrics()
    metrics = dict(metrics or {})
    for cb in callbacks:  # e.g. QAT/ONNX results
        if hasattr(cb, "final_metrics"):
            metrics.update(cb.final_metrics() or {})

    if trainer.is_global_zero:
        metrics["task"] = module.task_name
        metrics["epochs"] = trainer.current_epoch
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None and ckpt_cb.best_model_path:
            metrics["best_ckpt"] = ckpt_cb.best_model_path
        (out_dir / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2))
        csv_logs = [lg for lg in loggers if type(lg).__name__ == "CSVLogger"]
        if csv_logs:
            plot_training_curves(Path(csv_logs[0].log_dir) / "metrics.csv", out_dir / "curves.png")
        log.info("metrics: %s", json.dumps(_jsonable(metrics)))
    return metrics
