"""Run an exported ``.onnx`` file in ONNX Runtime and answer like the PyTorch network does in eval mode.

``OrtModel(path)(images)`` returns what ``net(images)`` returns in eval mode, read back from
the file's recorded output format (``models/export_formats.py``): logits, one-hot scores for an
argmax mask (same argmax), or a list of ``{"boxes", "scores", "labels"}``.
So ``TaskModule.evaluate_with(OrtModel(path), loader)`` computes the task's own metric on
the ONNX file.
"""

from __future__ import annotations

import logging

from pathlib import Path

import numpy as np

from .model_file import ExportedModel
from .onnx_export import check_onnx_file, onnx_metadata

__all__ = ["OrtModel", "ort_session", "write_onnx"]


def ort_session(path: str | Path, threads: int = 2):
    """An ``InferenceSession`` on CPU with ``threads`` intra-op threads and all graph optimizations on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


log = logging.getLogger(__name__)


def write_onnx(job, path: Path) -> Path:
    """The ONNX Runtime target's file: the job's ONNX file with uint8 activations (``ExportJob.onnx_file``)."""
    import shutil

    shutil.copyfile(job.onnx_file(), path)
    if job.core is not None and job.core.meta.get("mnv2_scheme") == "s8sym":  # the converted graph records its scheme
        log.warning("the ONNX Runtime int8 file is quantized in s8sym (TensorRT's zero-point-0 activations): ONNX Runtime cannot fold a ReLU6's "
                    "Clip into such a QuantizeLinear, so most convolutions run in float between Q/DQ pairs, slower than "
                    "the fp32 file (BENCHMARKS.md, session 13); for ONNX Runtime's speed quantize without tensorrt in "
                    "quant.targets (scheme u8)")
    return Path(path)


class OrtModel(ExportedModel):
    """An ONNX file of this package in ONNX Runtime, callable like the network it was exported from."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        self.path = Path(path)
        self._init_meta(onnx_metadata(check_onnx_file(self.path)))
        try:
            self.session = ort_session(self.path, threads)
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{self.path}: ONNX Runtime cannot load this model ({str(e)[:300]}); re-export it with tools/export.py") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, x: np.ndarray) -> list:
        return self.session.run(None, {self.input_name: x})

    def profile(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        """Milliseconds per run of each op type on ``x`` (ONNX Runtime's profiler, ``runs`` runs)."""
        import json
        import tempfile
        from collections import defaultdict

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.enable_profiling = True
        so.intra_op_num_threads = self.session.get_session_options().intra_op_num_threads
        totals: dict[str, float] = defaultdict(float)
        with tempfile.TemporaryDirectory() as tmp:  # ORT writes its trace file; keep it out of the cwd
            so.profile_file_prefix = str(Path(tmp) / "ort_profile")
            sess = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
            for _ in range(runs):
                sess.run(None, {self.input_name: x})
            trace = json.loads(Path(sess.end_profiling()).read_text())
        for ev in trace:
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                totals[ev["args"].get("op_name", "?")] += ev["dur"] / 1000 / runs
        return dict(totals)
