"""What every exported model file shares, whichever runtime runs it (``runners.open_model`` opens one by suffix).

An exported file (one per deployment target, ``targets.TARGETS``)
records its task, output format (``models/export_formats.py``) and input spec in its own
metadata. ``ExportedModel(path)(images)`` returns what the PyTorch network returns in eval mode,
read back by that format, so ``TaskModule.evaluate_with(open_model(path), loader)`` scores the
file with the task's own metric code in the runtime that runs it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from ..checkpoint import MODEL_FIELD, input_spec_of
from ..models.export_formats import outputs_from_export

__all__ = ["ExportedModel", "file_bytes"]


def _older_input_spec(meta: Mapping[str, str]) -> dict:
    """The input spec of a file without the record: older files' ``mnv2_input``, its size (where it gives none)
    the export's (``export_image_size``, or older files' ``"HxW"``)."""
    spec = json.loads(meta.get("mnv2_input") or "{}")
    if "image_size" not in spec:
        if meta.get("export_image_size"):
            spec["image_size"] = json.loads(meta["export_image_size"])
        else:
            h, w = (int(v) for v in meta.get("image_size", "0x0").split("x"))
            spec["image_size"] = [h, w] if h else None
    return spec


class ExportedModel:
    """Base of the runtime wrappers: ``meta`` (str -> str), ``run(images) -> {name: array}``, ``__call__``.

    Subclasses set ``path`` (``_locate``: a missing file named with the export that writes it), load the file
    (``_loading``: a file the runtime refuses named with its reason), call ``_init_meta`` with the file's metadata
    (which also sets ``output_names`` from its ``mnv2_output_names``, for runtimes that do not name outputs) and
    implement ``_run``.
    """

    runtime = "?"
    path: Path
    meta: dict[str, str]
    output_names: list[str]

    def _locate(self, path: str | Path, what: str, fmt: str) -> Path:
        """Set ``path``; a missing file is refused, naming the export that writes one (``--format fmt``)."""
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: {what} not found; export one with tools/export.py --format {fmt}")
        return self.path

    @contextmanager
    def _loading(self, runtime: str, fmt: str) -> Iterator[None]:
        """A file its runtime cannot load is refused with the file named and the runtime's reason."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{self.path}: {runtime} cannot load this model ({str(e)[:300]}); "
                             f"re-export it with tools/export.py --format {fmt}") from None

    def _init_meta(self, meta: Mapping[str, str]) -> None:
        self.meta = {str(k): str(v) for k, v in meta.items()}
        # files whose runtime does not name the outputs record them (runners whose runtime does set them after this)
        self.output_names = json.loads(self.meta.get("mnv2_output_names", "[]"))
        self.task = self.meta.get("task")
        self.format = self.meta.get("mnv2_outputs", "logits")
        self.num_classes = int(self.meta["num_classes"]) if "num_classes" in self.meta else None
        # the checkpoint's record (checkpoint.ModelRecord): task, network, and what inference needs (image size,
        # normalisation, class names, category ids) as evaluation fed it
        self.record = json.loads(self.meta.get(MODEL_FIELD) or "{}")
        self.input_spec = input_spec_of(self.record.get("input") or _older_input_spec(self.meta))

    def _run(self, x: np.ndarray) -> list:
        raise NotImplementedError

    def run(self, images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name."""
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        outs = self._run(np.ascontiguousarray(x, dtype=np.float32))
        return {name: np.asarray(o) for name, o in zip(self.output_names, outs)}

    def __call__(self, images: torch.Tensor) -> Any:
        """What the PyTorch network returns in eval mode (read back by the file's output format)."""
        try:
            return outputs_from_export(self.format, self.run(images), self.meta, images.shape[-2:])
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.path}: {e}") from None

    def profile(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        """Milliseconds per run of each op on ``x``, where the runtime has a profiler."""
        raise NotImplementedError(f"{self.path}: no per-op profiler for this runtime")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task}, outputs={self.format})"


def file_bytes(path: str | Path) -> int:
    """Bytes of an exported model: the file and the companions its target declares (OpenVINO's ``.bin``)."""
    from .targets import target_of_file

    files = target_of_file(path).files_of(path)
    return sum(f.stat().st_size for f in files if f.is_file()) + sum(  # a package (Core ML's .mlpackage): its files
        g.stat().st_size for f in files if f.is_dir() for g in f.rglob("*") if g.is_file())
