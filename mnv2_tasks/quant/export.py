"""Export a training checkpoint for its deployment targets, float and int8, and check every file in its runtime.

``export_checkpoint`` is what ``tools/export.py`` runs: the task, network and input size come from
the checkpoint; its task's data config (plus ``key=value`` overrides) gives the validation images
the export is checked on and, for an int8 export of a float checkpoint, the training images PTQ
calibrates on (in the scheme the targets take, ``targets.scheme_for``). Every target's file
(``targets.TARGETS``) is run in its runtime at batch 1 and batch
``check_images`` against PyTorch (fp32: the float network; int8: the converted PT2E graph in PyTorch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from omegaconf import OmegaConf

from ..checkpoint import MODEL_FIELD, CheckpointError, ModelRecord, build_net, check_compatible, float_net_from, net_state
from ..config import compose_train_config
from ..models.contract import image_hw
from .deploy import DeployModule
from .model_file import file_bytes
from .runners import open_model
from .onnx_export import OPSET
from .parity import check_failures, compare_outputs, format_report
from .pt2e import convert, prepare
from .ptq import calibration_batches, ptq_convert
from .targets import TARGETS, TargetError, check_targets, scheme_for, targets_metadata, write_targets

__all__ = ["load_for_export", "export_checkpoint", "export_datamodule"]

_QAT_GRAPH_PREFIX = "net.graph."


def load_for_export(ckpt: ModelRecord | str | Path, example_loader: Callable[[], torch.Tensor] | None = None,
                    task: str | None = None, net_overrides: dict | None = None):
    """(task, float network, prepared QAT graph or None, the checkpoint's record) from a checkpoint of this package
    (a path, or its ``ModelRecord`` already read).

    ``task`` / ``net_overrides``: what the user asked for; it must be the checkpoint's.
    ``example_loader`` gives example images to rebuild a QAT checkpoint's graph.
    """
    record = ckpt if isinstance(ckpt, ModelRecord) else ModelRecord.read(ckpt)
    ckpt_path, qinfo = record.path, record.quant
    if task is not None or net_overrides:
        check_compatible(record.checkpoint, task or record.task, {**record.net, **(net_overrides or {})},
                         quant=(qinfo or {}).get("mode"), path=ckpt_path)
    if qinfo is None:
        return record.task, float_net_from(record.checkpoint, ckpt_path).eval(), None, record
    # QAT checkpoint: the float weights sit in the captured graph under their original names
    if not record.net:
        raise CheckpointError(f"{ckpt_path}: the checkpoint does not record how its network was built ('mnv2_tasks.net')")
    float_net = build_net(record.net).eval()
    missing, _ = float_net.load_state_dict(net_state(record.state_dict, _QAT_GRAPH_PREFIX + "net."), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{ckpt_path}: QAT checkpoint lacks float weights {missing[:5]}; was it written by QATCallback?")
    if example_loader is None:
        raise ValueError("a QAT checkpoint needs example images to rebuild its graph")
    prepared = prepare(float_net, example_loader(), qat=True, scheme=qinfo["scheme"])
    try:
        prepared.load_state_dict(net_state(record.state_dict, _QAT_GRAPH_PREFIX))
    except RuntimeError as e:
        raise CheckpointError(
            f"{ckpt_path}: the QAT graph rebuilt here does not match the checkpoint's ({str(e)[:300]}); "
            f"export with the torch / torchao versions it was trained with ({qinfo.get('torch')})"
        ) from None
    return record.task, float_net, prepared, record


def export_datamodule(task: str, overrides: Sequence[str], image_size=None, with_config: bool = False):
    """The task's data module (composed like ``python train.py task=<task> <overrides>``), set up, no workers
    (``with_config``: and the composed config).

    ``image_size``: validate at the size the network was trained at, unless the user set ``data.image_size``.
    """
    from hydra.utils import instantiate
    from omegaconf import open_dict

    cfg = compose_train_config([f"task={task}", *overrides])
    user_keys = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    with open_dict(cfg):
        if image_size is not None and "data.image_size" not in user_keys and "image_size" in cfg.data:
            h, w = image_hw(image_size)
            cfg.data.image_size = h if h == w else [h, w]  # the data configs' own form: an int where square
        cfg.data.num_workers = 0
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return (dm, cfg) if with_config else dm


def _take(loader, n: int) -> torch.Tensor:
    out, seen = [], 0
    for batch in loader:
        out.append(batch["image"])
        seen += batch["image"].shape[0]
        if seen >= n:
            break
    return torch.cat(out)[:n]


def export_checkpoint(
    ckpt: str | Path,
    precision: str = "both",
    outputs: str | None = None,
    postprocess: str | None = None,
    out_dir: str | Path | None = None,
    calibration_images: int = 64,
    check_images: int = 8,
    task: str | None = None,
    opset: int = OPSET,
    threads: int = 2,
    overrides: Sequence[str] = (),
    report_to: Callable[[str], None] = print,
    formats: str | Sequence[str] = ("onnx",),
) -> dict:
    """Export ``ckpt`` for each target of ``formats`` (``targets.TARGETS``) as ``<stem>.<precision>.<suffix>``
    (fp32, int8 or both) and check each file in its runtime; returns the report (``files``: ``<target>_<precision>``)."""
    ckpt_path = Path(ckpt)
    if ckpt_path.suffix == ".onnx":
        raise CheckpointError(f"{ckpt_path}: already an ONNX file; export takes a training checkpoint (.ckpt)")
    record = ModelRecord.read(ckpt_path)  # the one reading of the checkpoint
    dm, cfg = export_datamodule(task or record.task, overrides, record.input.get("image_size"), with_config=True)
    # the network settings the user gave (model.net.<key>=...), as the composed config resolved them
    user_keys = [o.split("=", 1)[0].lstrip("+")[len("model.net."):] for o in overrides if o.lstrip("+").startswith("model.net.")]
    net_overrides = {k: OmegaConf.select(cfg, f"model.net.{k}") for k in user_keys}
    val_images = _take(dm.val_dataloader(), check_images)
    task, float_net, prepared, record = load_for_export(record, lambda: val_images[:2], task, net_overrides)
    if postprocess:
        float_net.use_postprocess(postprocess)
    fmt = float_net.check_format(outputs)
    targets = check_targets(formats)
    if prepared is not None:  # a QAT checkpoint: its graph's scheme must suit every target
        scheme = record.quant["scheme"]
        try:
            scheme_for(targets, scheme)
        except TargetError as e:
            raise TargetError(f"{ckpt_path}: {e}; the QAT run was quantized for other targets, so re-run QAT with "
                              f"quant.targets=[{','.join(targets)}] (or export its float checkpoint: int8 by PTQ)") from None
    else:
        scheme = scheme_for(targets)
    out_dir = Path(out_dir) if out_dir else ckpt_path.parent
    precisions = ["fp32", "int8"] if precision == "both" else [precision]
    example = val_images[:2]
    report: dict = {"ckpt": str(ckpt_path), "task": task, "opset": opset, "outputs": fmt, "targets": targets,
                    "scheme": scheme, "image_size": list(example.shape[-2:]), "files": {}}
    for p in precisions:
        core: nn.Module | None = None
        if p == "int8" and prepared is not None:
            core = convert(prepared)
            report["int8_source"] = "qat"
        elif p == "int8":
            batches = calibration_batches(dm.train_dataloader(), calibration_images)
            core = ptq_convert(float_net, example, batches, scheme)
            report["int8_source"] = f"ptq ({sum(b.shape[0] for b in batches)} calibration images, scheme {scheme})"
        meta = {"source": ckpt_path.name, MODEL_FIELD: record.to_json(), **targets_metadata(targets, scheme)}
        paths = write_targets(targets, core, float_net, example, out_dir, p, meta, stem=ckpt_path.stem, fmt=fmt, opset=opset)
        what = "float network" if p == "fp32" else "converted int8 graph in PyTorch"
        for target, path in paths.items():
            if not TARGETS[target].runs_here():
                size = file_bytes(path)
                report_to(f"== {path} ({size / 2**20:.2f} MB, {TARGETS[target].display}): written and its spec checked; "
                          f"{TARGETS[target].display} does not run on this machine, so the outputs were not compared")
                report["files"][f"{target}_{p}"] = {"path": str(path), "bytes": size, "runtime": TARGETS[target].display,
                                                    "checks": {}}
                continue
            model = open_model(path, threads)
            reference = DeployModule(core, float_net, model.format).eval()
            checks = {f"batch {n}": compare_outputs(reference, model, val_images[:n]) for n in sorted({1, len(val_images)})}
            size = file_bytes(path)
            report_to(f"== {path} ({size / 2**20:.2f} MB, {model.target.display}, outputs {model.format}, dynamic batch, "
                      f"input {list(example.shape[1:])})")
            for name, rep in checks.items():
                report_to(format_report(f"{model.target.display} vs {what}, {name}", rep))
            failures = check_failures(path, checks)
            if failures:
                raise ValueError("export check FAILED: " + "; ".join(failures))
            report["files"][f"{target}_{p}"] = {"path": str(path), "bytes": size, "runtime": model.target.display, "checks": checks}
    return report

