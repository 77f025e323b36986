"""ExecuTorch with the XNNPACK delegate: a ``.pte`` file of a network's deploy module, and ``EtModel`` to run it.

The float network, or a converted PT2E graph of the ``s8`` / ``s8sym`` scheme (XNNPACK's
kernels take signed int8 activations; a ``u8`` graph lowers but XNNPACK refuses to compile it
at load time), is exported with a dynamic batch up to ``MAX_BATCH_PTE`` (memory is planned for
it; ``EtModel`` runs larger batches in chunks), lowered with ``XnnpackPartitioner`` and saved
as a ``.pte``. ExecuTorch has no NMS kernel, so a detector is written in its NMS-free output
format (``decoded``: boxes and per-class scores, decoded in float); ``EtModel`` runs the same
``select_detections`` on them as every other runtime (``models/export_formats.py``). The file's
metadata is a constant method ``mnv2_metadata`` returning JSON. Install with
``pip install mnv2_tasks[executorch]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from ..models.contract import pad_batch
from .model_file import ExportedModel

__all__ = ["write_executorch", "write_target", "EtModel", "set_threads", "META_METHOD"]

META_METHOD = "mnv2_metadata"
# the batch a .pte is memory-planned for: ExecuTorch allocates its tensors up front for the largest
# batch, so larger batches run in chunks of this size (``EtModel``); robots infer at batch 1
MAX_BATCH_PTE = 8


def _executorch():
    try:
        import executorch.kernels.quantized  # noqa: F401 - registers the quantized ops a partly delegated graph keeps
        from executorch.runtime import Runtime
    except ImportError:
        raise ImportError("ExecuTorch is not installed: pip install 'mnv2_tasks[executorch]' (or pip install executorch)") from None
    return Runtime


def set_threads(threads: int) -> None:
    """ExecuTorch's (process-wide) thread pool size; it ignores ``taskset``, so set it explicitly."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if _threadpool_get_thread_count() != threads:
        _unsafe_reset_threadpool(int(threads))


def write_target(job, path: Path) -> Path:
    """The ExecuTorch target's file: the job's core in its NMS-free output format, lowered to XNNPACK, at ``path``."""
    module, meta = job.nms_free_module(job.core)
    return write_executorch(module, job.example, path, module.output_names, meta)


def write_executorch(module: nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str],
                     metadata: dict[str, str]) -> Path:
    """Export ``module`` (images -> tuple of tensors; dynamic batch), lower it to XNNPACK, save a ``.pte`` at ``path``."""
    _executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**{k: str(v) for k, v in metadata.items()}, "mnv2_output_names": json.dumps(list(output_names)),
            "mnv2_max_batch": str(MAX_BATCH_PTE)}
    with torch.no_grad():
        ep = torch.export.export(module.eval(), (pad_batch(example),), strict=False,
                                 dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH_PTE)},))
        program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                              constant_methods={META_METHOD: json.dumps(meta)}).to_executorch()
    path.write_bytes(program.buffer)
    return path


class EtModel(ExportedModel):
    """A ``.pte`` file of this package in ExecuTorch (XNNPACK), callable like the network it was exported from."""

    runtime = "executorch"

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        Runtime = _executorch()
        self._locate(path, "ExecuTorch file", "executorch")
        set_threads(threads)
        with self._loading("ExecuTorch", "executorch"):
            program = Runtime.get().load_program(str(self.path))
            meta = json.loads(program.load_method(META_METHOD).execute([])[0]) if META_METHOD in program.method_names else {}
            self.method = program.load_method("forward")
        self._program = program
        self._init_meta(meta)

    def _run(self, x: np.ndarray) -> list:
        step = int(self.meta.get("mnv2_max_batch", 1))
        chunks = [[o.numpy() for o in self.method.execute([torch.from_numpy(x[i:i + step])])] for i in range(0, len(x), step)]
        return chunks[0] if len(chunks) == 1 else [np.concatenate(parts) for parts in zip(*chunks)]
