"""Deployment targets: one record per runtime, from which everything else derives.

=============  ==========================  =================================  ==================
target         runtime                     files (``<stem>.<precision>...``)  int8 schemes
=============  ==========================  =================================  ==================
``onnx``       ONNX Runtime                ``.fp32.onnx``, ``.int8.onnx``      u8, s8, s8sym
``openvino``   OpenVINO (IR)               ``.fp32.xml``, ``.int8.xml`` (+bin) u8, s8, s8sym
``executorch`` ExecuTorch, XNNPACK         ``.fp32.pte``, ``.int8.pte``        s8, s8sym
``tensorrt``   TensorRT (explicit Q/DQ)    ``.int8.trt.onnx``                  s8sym
``ncnn``       NCNN (pnnx)                 ``.fp32.ncnn.param`` (+bin, json)   none: fp32 only
``coreml``     Core ML (macOS/iOS)         ``.fp32.mlpackage``, ``.int8...``   none: int8 weights
``litert``     LiteRT (TFLite), XNNPACK    ``.fp32.tflite``, ``.int8.tflite``  s8, s8sym
=============  ==========================  =================================  ==================

A ``Target`` record names the target (``quant.targets=[...]``, ``mnv2-export --format``), how
people call its runtime, its file suffix (and companion files), the int8 schemes and precisions
it takes, its writer, its runner and the optional extra that installs it. The CLI choices, the
suffix a model file is opened by (``runners.open_model``, the Predictor, ``tools/eval.py``), the
export, the QAT/PTQ run's evaluation and the deploy benchmark's rows all read ``TARGETS``. A new
runtime is its own module (a writer and an ``ExportedModel`` runner) plus one record here
(``tests/test_deploy_targets.py`` adds a toy one).

One QAT or PTQ run quantizes once, in the one scheme every requested target takes
(``scheme_for``: the first of u8, s8, s8sym that all accept), and writes every target's files
from that one converted graph (``write_targets``, through an ``ExportJob``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .onnx_export import OPSET
from .quantizer import SCHEMES, check_scheme

log = logging.getLogger(__name__)

__all__ = ["Target", "TARGETS", "ExportJob", "check_targets", "scheme_for", "target_file", "write_targets",
           "target_of_file", "model_suffixes", "TargetError", "targets_metadata", "runs_here"]


class TargetError(ValueError):
    """A target list or scheme that cannot work; the message says what to change."""


def _lazy(module: str, name: str) -> Callable:
    """``module.name`` imported on first call (a runtime is imported only when its target is used)."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module, __package__), name)(*args, **kwargs)

    call.__qualname__ = f"{module}.{name}"
    return call


@dataclass(frozen=True)
class Target:
    """One deployment target.

    Attributes:
        name: the target's name in ``quant.targets`` and ``mnv2-export --format``.
        display: the runtime as people call it (reports, benchmark rows).
        suffix: the file suffix after ``<stem>.<precision>`` (also how a file is recognised; longest wins).
        schemes: the int8 schemes its runtime runs (``quantizer.SCHEMES``).
        precisions: the files it gets (``fp32``, ``int8``).
        writer: ``writer(job, path) -> Path`` writes the file of ``job`` (an ``ExportJob``) at ``path``.
        runner: ``runner(path, threads) -> ExportedModel``: the file in its runtime.
        extra: the optional extra that installs the runtime (``pip install 'mnv2_tasks[<extra>]'``); ``None``: core.
        companions: suffixes of files that travel beside the model file (OpenVINO's ``.bin``).
        runs_here: whether the runtime runs on this machine (Core ML: macOS only); where it does not, files are
            written and checked by their writer, and not evaluated or benchmarked.

    A target with no ``schemes`` (NCNN, Core ML) takes no part in choosing the PT2E int8 scheme.
    """

    name: str
    display: str
    suffix: str
    schemes: tuple[str, ...]
    precisions: tuple[str, ...]
    writer: Callable = field(repr=False)
    runner: Callable = field(repr=False)
    extra: str | None = None
    companions: tuple[str, ...] = ()
    runs_here: Callable[[], bool] = field(default=lambda: True, repr=False)

    def file(self, stem: str, precision: str) -> str | None:
        """``<stem>.<precision><suffix>``, or ``None`` where the target has no file of that precision."""
        return f"{stem}.{precision}{self.suffix}" if precision in self.precisions else None

    def files_of(self, path: str | Path) -> list[Path]:
        """The model file and its companions."""
        path = Path(path)
        return [path, *(path.with_suffix(c) for c in self.companions)]


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", "ONNX Runtime", ".onnx", ("u8", "s8", "s8sym"), ("fp32", "int8"),
           writer=_lazy(".ort_runner", "write_onnx"), runner=_lazy(".ort_runner", "OrtModel")),
    Target("openvino", "OpenVINO", ".xml", ("u8", "s8", "s8sym"), ("fp32", "int8"),
           writer=_lazy(".openvino_runtime", "write_target"), runner=_lazy(".openvino_runtime", "OvModel"),
           extra="openvino", companions=(".bin",)),
    Target("executorch", "ExecuTorch XNNPACK", ".pte", ("s8", "s8sym"), ("fp32", "int8"),
           writer=_lazy(".executorch_runtime", "write_target"), runner=_lazy(".executorch_runtime", "EtModel"),
           extra="executorch"),
    Target("tensorrt", "TensorRT-ready Q/DQ (in ONNX Runtime)", ".trt.onnx", ("s8sym",), ("int8",),
           writer=_lazy(".tensorrt_target", "write_tensorrt"), runner=_lazy(".ort_runner", "OrtModel")),
    Target("ncnn", "NCNN", ".ncnn.param", (), ("fp32",),
           writer=_lazy(".ncnn_runtime", "write_target"), runner=_lazy(".ncnn_runtime", "NcnnModel"),
           extra="ncnn", companions=(".bin", ".json")),
    Target("coreml", "Core ML", ".mlpackage", (), ("fp32", "int8"),
           writer=_lazy(".coreml_target", "write_target"), runner=_lazy(".coreml_target", "CoremlModel"),
           extra="coreml", runs_here=_lazy(".coreml_target", "runs_here")),
    Target("litert", "LiteRT XNNPACK", ".tflite", ("s8", "s8sym"), ("fp32", "int8"),
           writer=_lazy(".litert_runtime", "write_target"), runner=_lazy(".litert_runtime", "LiteRtModel"),
           extra="litert"),
)}


def check_targets(targets: str | Iterable[str]) -> list[str]:
    """``targets`` (a list, or a comma-separated string; ``all``) as a list of known targets, in ``TARGETS`` order."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = list(targets)
    if "all" in targets:
        return list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise TargetError(f"unknown deployment target(s) {unknown or targets}; choose from {list(TARGETS)} or 'all' "
                          f"(quant.targets=[{','.join(TARGETS)}], tools/export.py --format)")
    return [t for t in TARGETS if t in targets]


def scheme_for(targets: Sequence[str], scheme: str = "auto") -> str:
    """The int8 scheme for ``targets``: ``scheme`` if every target takes it, else an error; ``auto``: the first that all take.
    Targets without a PT2E scheme (NCNN, Core ML) take part in none."""
    targets = [t for t in check_targets(targets) if TARGETS[t].schemes]
    if not targets:
        return "s8" if scheme == "auto" else check_scheme(scheme)
    if scheme != "auto":
        check_scheme(scheme)
        refusing = [t for t in targets if scheme not in TARGETS[t].schemes]
        if refusing:
            raise TargetError(f"quantization scheme {scheme!r} does not run on {refusing} (they take "
                              f"{ {t: TARGETS[t].schemes for t in refusing} }); use quant.scheme=auto")
        return scheme
    for s in SCHEMES:
        if all(s in TARGETS[t].schemes for t in targets):
            return s
    raise TargetError(f"no one int8 scheme serves {targets}")


def target_file(stem: str, target: str, precision: str) -> str | None:
    """File name of ``target`` at ``precision`` (``None``: the target has no file of that precision)."""
    return TARGETS[target].file(stem, precision)


def model_suffixes() -> list[str]:
    """Every suffix an exported model file may have (the CLI's and the Predictor's choices)."""
    return list(dict.fromkeys(t.suffix for t in TARGETS.values()))


def target_of_file(path: str | Path) -> Target:
    """The target whose runtime runs ``path``, by its longest matching suffix; an unknown suffix names the choices."""
    name = Path(path).name
    for t in sorted(TARGETS.values(), key=lambda t: len(t.suffix), reverse=True):
        if name.endswith(t.suffix):
            return t
    raise ValueError(f"{path}: not an exported model file; pass one of {', '.join(model_suffixes())} "
                     "(written by tools/export.py or a quant=qat / quant=ptq run)")


@dataclass
class ExportJob:
    """What every target's writer is given: one deploy core and how to describe it.

    ``core``: the converted int8 graph (``None``: the float network); ``fmt``: the network's output format
    (writers may take a variant, e.g. ExecuTorch's NMS-free one); ``metadata``: what the file records
    besides the network's own (``deploy.file_metadata``).
    """

    core: nn.Module | None
    net: nn.Module
    example: torch.Tensor
    out_dir: Path
    stem: str
    precision: str
    fmt: str | None = None
    metadata: dict = field(default_factory=dict)
    opset: int = OPSET
    _onnx: Path | None = None

    def nms_free_module(self, core: nn.Module | None) -> tuple[nn.Module, dict[str, str]]:
        """The deploy module of ``core`` (``None``: the float network) in the network's NMS-free output format, in eval mode,
        and the metadata its file records: what the runtimes without an NMS kernel (ExecuTorch, NCNN, Core ML,
        LiteRT) convert."""
        from .deploy import DeployModule, file_metadata, nms_free_format

        module = DeployModule(core, self.net, nms_free_format(self.net, self.fmt)).eval()
        meta = {**file_metadata(self.net, module.fmt, self.example, self.opset), **{k: str(v) for k, v in self.metadata.items()}}
        return module, meta

    def onnx_file(self) -> Path:
        """The ONNX file with uint8 activations, as ONNX Runtime runs fastest: written once (a temporary file beside the
        outputs, removed by ``write_targets``), shared by the targets that start from it (ONNX Runtime's own file,
        OpenVINO's conversion)."""
        if self._onnx is None:
            from .deploy import export_deploy
            from .pt2e import uint8_activations

            core = uint8_activations(self.core) if self.core is not None else None
            path = self.out_dir / f".{self.stem}.{self.precision}.{os.getpid()}.tmp.onnx"
            self._onnx = export_deploy(core, self.net, self.example, path, fmt=self.fmt, metadata=self.metadata,
                                       opset=self.opset)
        return self._onnx


def write_targets(
    targets: Sequence[str],
    core: nn.Module | None,
    net: nn.Module,
    example: torch.Tensor,
    out_dir: str | Path,
    precision: str,
    metadata: dict | None = None,
    stem: str = "model",
    fmt: str | None = None,
    opset: int = OPSET,
) -> dict[str, Path]:
    """Write ``precision``'s file of every target in ``targets`` from one deploy core; ``{target: path}``
    (a target without a file of that precision, or one the network declares it cannot be converted for
    (``TaskNet.unsupported_targets``, logged with the reason), is left out)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = ExportJob(core, net, example, out_dir, stem, precision, fmt, {**(metadata or {}), "precision": precision}, opset)
    # every file is written beside its destination under a temporary name and renamed into place once all are
    # written: a failed or killed export leaves the previous files as they were (atomic_files.py)
    moves: list[tuple[Path, Path]] = []
    paths: dict[str, Path] = {}
    refused = net.unsupported_targets()  # what the network's layers declare no converter of the target takes
    try:
        for name in check_targets(targets):
            spec = TARGETS[name]
            if precision not in spec.precisions:
                continue
            if name in refused:
                log.warning("%s %s file not written: %s (the network's own declaration)", spec.display, precision,
                            refused[name])
                continue
            final = out_dir / spec.file(stem, precision)
            tmp = out_dir / f".{final.name}.{os.getpid()}.tmp{spec.suffix}"
            moves += list(zip(spec.files_of(tmp), spec.files_of(final)))  # before writing: cleaned up if it fails
            spec.writer(job, tmp)
            paths[name] = final
        for tmp, final in moves:
            if tmp.exists():
                if tmp.is_dir() and final.is_dir():  # a package (Core ML's .mlpackage) replaces the previous one
                    shutil.rmtree(final)
                os.replace(tmp, final)
    finally:
        for tmp in [t for t, _ in moves] + ([job._onnx] if job._onnx is not None else []):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
    return paths


def runs_here(key: str) -> bool:
    """Whether the file ``<target>_<precision>`` (``key``) can run on this machine (``Target.runs_here``)."""
    return TARGETS[key.rsplit("_", 1)[0]].runs_here()


def targets_metadata(targets: Sequence[str], scheme: str) -> dict[str, str]:
    return {"quant_scheme": scheme, "quant_targets": json.dumps(list(targets))}
