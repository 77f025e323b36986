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

from .atomic_files import AtomicCheckpointIO, check_free_space, check_writable
from .checkpoint import check_compatible
from .divergence import DivergedError, DivergenceGuard
from .resume import RecordConfig, check_resume, resolve_ckpt_path
from .config import classes_from_data, scale_lr, settings_for_weights
from .config_check import check_config
from .models.contract import net_class
from .plots import plot_training_curves

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


def _pretrained_backbone(cfg: DictConfig) -> str | None:
    """``pretrain=embedded``: the embedded pretrained backbone's path (made once, then cached), or ``None``.

    None when there is no pretraining stage, when ``model.pretrained`` names a file (it wins), when
    the run resumes (``ckpt_path``) or fine-tunes (``quant.from_ckpt``) a checkpoint (every weight
    comes from it), when the network's class declares it takes no MobileNetV2 weights, and when the data is not the
    embedded set (its shapes are no pretraining for a user's own images): the log then says the run starts from scratch.
    """
    if cfg.model.get("pretrained") or cfg.get("ckpt_path") or (cfg.get("quant") or {}).get("from_ckpt"):
        return None
    takes = net_class(cfg.model.net._target_).takes_mobilenetv2_weights
    scratch = ("training the backbone FROM SCRATCH: no ImageNet weights given. Pass model.pretrained=<file> "
               "(torchvision's mobilenet_v2-b0353104.pth / mobilenet_v2-7ebf99e0.pth, a timm mobilenetv2_* file, or a "
               "checkpoint of this package) for a far better start")
    if not cfg.get("pretrain"):
        if takes:
            log.warning("%s", scratch)
        return None
    if not takes:
        log.info("pretrain: %s takes no MobileNetV2 weights; training from scratch", cfg.model.net.get("_target_"))
        return None
    if not cfg.data.get("shapes_root"):  # a user's data set: the embedded shapes are no pretraining for it
        log.warning("pretrain=embedded is for the embedded data set only, not data=%s; %s", cfg.data.get("_target_"), scratch)
        return None
    path = str(instantiate(cfg.pretrain))
    log.info("pretrain: backbone weights from %s", path)
    return path


def train(cfg: DictConfig) -> dict:
    """Train and evaluate as ``cfg`` says; write ``metrics.json`` and ``curves.png`` to the run dir; return the metrics."""
    check_config(cfg)  # every setting in its range before anything runs
    out_dir = Path(cfg.paths.output_dir)
    check_writable(out_dir)  # made and writable, or a one-line error naming it
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.get("ckpt_path") == "last":  # this run folder's newest checkpoint, if any (a requeued or relaunched job)
        with open_dict(cfg):
            cfg.ckpt_path = resolve_ckpt_path("last", out_dir)
    pretrained = _pretrained_backbone(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    scale_lr(cfg)  # lr_scaling.rule: the lr follows the global batch (said in the log)
    settings_for_weights(cfg)  # Keras weights: TensorFlow's padding and [-1, 1] inputs
    datamodule = instantiate(cfg.data)
    classes_from_data(cfg, datamodule)  # data.num_classes: null -> the data's own count
    datamodule.config = OmegaConf.to_container(cfg.data, resolve=True)  # recorded in checkpoints and exported files
    module = instantiate(cfg.model)
    if pretrained:
        module.load_pretrained_backbone(pretrained)
    module.net_spec = OmegaConf.to_container(cfg.model.net, resolve=True)
    if cfg.get("ckpt_path"):
        meta = check_compatible(cfg.ckpt_path, module.task_name, module.net_spec, quant=(cfg.get("quant") or {}).get("mode"))
        check_resume(cfg, {"mnv2_tasks": meta}, cfg.ckpt_path)  # refuses what cannot change, says what the state overrides

    # where the checkpoints go, checked before the first epoch: writable, and room for the best, the last and the one
    # being written (weights and optimizer state: about 3x the parameters' bytes each)
    check_free_space(out_dir, 3 * 3 * 4 * sum(p.numel() for p in module.parameters()))
    # the divergence guard is always on: a non-finite loss or network stops the run (divergence.py)
    callbacks = [*_instantiate_group(cfg.get("callbacks")), DivergenceGuard(), RecordConfig(cfg)]
    loggers = _instantiate_group(cfg.get("logger"))
    # checkpoints written beside their destination and renamed into place: a kill or a full disk never tears one
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(out_dir),
                                     plugins=[AtomicCheckpointIO()])
    if trainer.is_global_zero:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except DivergedError as e:  # metrics.json says how the run ended; only finite checkpoints were kept
        if trainer.is_global_zero:
            ended = {"ended": "diverged", "error": str(e), "task": module.task_name, "epochs": trainer.current_epoch,
                     "global_step": trainer.global_step}
            (out_dir / "metrics.json").write_text(json.dumps(ended, indent=2))
        log.error("%s", e)
        raise
    metrics = module.final_metrics()
    if metrics is None or trainer.current_epoch % max(1, trainer.check_val_every_n_epoch) != 0:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics = module.final_metrics()
    metrics = dict(metrics or {})
    for cb in callbacks:  # e.g. QAT/ONNX results
        if hasattr(cb, "final_metrics"):
            metrics.update(cb.final_metrics() or {})

    if trainer.is_global_zero:
        metrics["skipped_samples"] = datamodule.skipped_samples + module.skipped_samples  # bad samples left out (data.on_bad=warn)
        metrics["task"] = module.task_name
        metrics["ended"] = "completed"
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
