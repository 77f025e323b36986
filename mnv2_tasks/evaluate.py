"""``evaluate(cfg)``: a model file on a validation set through the task's own metric code.

The model file may be a training checkpoint of this package (``.ckpt``), a torchvision / timm /
package weight file (``.pth``, ``.safetensors``: classification, or a backbone), or an exported
file, run in its runtime: ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO IR), ``.pte`` (ExecuTorch). ``tools/eval.py`` is its command line; the config is
``conf/eval.yaml`` (``conf/train.yaml`` plus ``ckpt`` and ``device``).

The model's recorded classes (class names and, for detection, the data set's category ids) are
compared with the data's: the same ids pass, the same names under other ids are mapped by name
(logged), anything else is refused (``checkpoint.check_categories``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .checkpoint import check_categories, check_compatible, read_checkpoint
from .config import classes_from_data, settings_for_weights
from .models.pretrained import CheckpointError, load_pretrained

log = logging.getLogger(__name__)

__all__ = ["evaluate", "write_metrics", "with_recorded_run"]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _recorded(path: Path) -> tuple[str | None, dict | None, dict | None]:
    """What a model file says it was trained as: task, network node and data config (each ``None`` if not recorded)."""
    from .checkpoint import ModelRecord
    from .quant.targets import model_suffixes

    if path.suffix == ".ckpt":
        rec = ModelRecord.read(path)
        config = rec.checkpoint["mnv2_tasks"].get("config") or {}
        return rec.task, rec.net or None, config.get("data") or rec.input.get("data")
    if path.name.endswith(tuple(model_suffixes())):
        from .quant.runners import open_model

        record = open_model(path).record
        return record.get("task"), record.get("net") or None, (record.get("input") or {}).get("data")
    return None, None, None


def with_recorded_run(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``cfg`` with what ``cfg.ckpt`` recorded of its run (task, network, data config) wherever this command's
    ``overrides`` do not set them: ``mnv2-eval ckpt=<run>/checkpoints/last.ckpt`` evaluates on the run's own data,
    ``data.root=...`` moves it, ``data=<other>`` replaces it."""
    from .config import compose_train_config

    path = Path(cfg.ckpt)
    if not path.is_file():
        return cfg  # evaluate() names the missing file
    task, net, data = _recorded(path)
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    if task and "task" not in keys and task != cfg.get("task"):
        output_dir = cfg.paths.output_dir
        cfg = compose_train_config([f"task={task}", *overrides], "eval")
        with open_dict(cfg):
            cfg.paths.output_dir = output_dir
        log.info("%s: task=%s as recorded", path, task)
    with open_dict(cfg):
        if net and not any(k == "model" or k.startswith("model.net") for k in keys) and cfg.get("task") == task:
            cfg.model.net = net
        if data and "data" not in keys and cfg.get("task") == task:
            mine = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").startswith("data.")]
            cfg.data = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist([o.lstrip("+~") for o in mine]))
            log.info("%s: evaluating on the data it was trained with (%s)%s", path, data.get("_target_"),
                     f", with {mine}" if mine else "")
    return cfg


def evaluate(cfg: DictConfig) -> dict:
    """Build the task's module and data from ``cfg``, load ``cfg.ckpt``, evaluate on the val split; return the metrics."""
    from .config_check import check_config

    check_config(cfg)
    ckpt = Path(cfg.ckpt)
    device = _device(cfg.get("device", "auto"))
    settings_for_weights(cfg, ckpt)  # a Keras .h5: TensorFlow's padding and [-1, 1] inputs
    datamodule = instantiate(cfg.data)
    classes_from_data(cfg, datamodule)
    module = instantiate(cfg.model)
    net_spec = OmegaConf.to_container(cfg.model.net, resolve=True)
    datamodule.prepare_data()
    datamodule.setup("validate")
    data_spec = datamodule.input_spec()
    from .quant.runners import open_model
    from .quant.targets import model_suffixes

    if ckpt.name.endswith(tuple(model_suffixes())):
        fn = open_model(ckpt, task=module.task_name)
        model_spec = fn.input_spec
    else:
        model_spec = {}
        if ckpt.suffix == ".ckpt":
            loaded = read_checkpoint(ckpt)
            meta = check_compatible(loaded, module.task_name, net_spec, path=ckpt)
            module.load_state_dict(loaded["state_dict"])
            model_spec = meta.get("input") or {}
        else:  # a torchvision / timm / package weight file
            report = load_pretrained(module.net, ckpt)
            if report.missing:
                raise CheckpointError(f"{ckpt}: these weights are missing for the configured model: {report.missing}")
        module.to(device).eval()

        def fn(images: torch.Tensor):
            return module.net(images.to(device))

    ids = check_categories(model_spec, data_spec.get("class_names"), data_spec.get("category_ids"),
                           source=str(getattr(datamodule, "val_ann_file", None) or getattr(datamodule, "root", "the data")),
                           model=str(ckpt))
    if ids is not None:
        module.set_category_ids(ids)
    module.eval_output_dir = cfg.paths.output_dir  # where tasks may write prediction files
    metrics = module.evaluate_with(fn, datamodule.val_dataloader())
    metrics["ckpt"] = str(ckpt)
    return metrics


def write_metrics(metrics: dict, out_dir: str | Path, name: str = "eval_metrics.json") -> Path:
    """``metrics`` as JSON (NaN, e.g. a class absent from the set, written as null); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / name).write_text(json.dumps(clean, indent=2, default=float))
    return out / name
