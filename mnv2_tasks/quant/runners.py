"""``open_model(path)``: an exported file in the runtime of the deployment target its suffix names (``targets.TARGETS``)."""

from __future__ import annotations

from pathlib import Path

from .model_file import ExportedModel
from .targets import target_of_file

__all__ = ["open_model"]


def open_model(path: str | Path, threads: int = 2, task: str | None = None) -> ExportedModel:
    """The exported file ``path`` in its target's runtime (by suffix), refusing one exported for another ``task``.

    The model's ``target`` is the record it was opened by (``display``: the runtime's name in reports)."""
    target = target_of_file(path)
    try:
        model = target.runner(path, threads)
    except ImportError as e:
        raise ImportError(f"{path}: {e}" + (f"; pip install 'mnv2_tasks[{target.extra}]'" if target.extra else "")) from None
    model.target = target
    if task is not None and model.task and model.task != task:
        raise ValueError(f"{path}: a model of task '{model.task}', but the run is task '{task}'; run with task={model.task}")
    return model
