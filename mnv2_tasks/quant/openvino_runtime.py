"""OpenVINO: an exported ``.onnx`` file as OpenVINO IR (``.xml`` + ``.bin``), and ``OvModel`` to run it.

OpenVINO reads the QDQ ``.onnx`` of any scheme directly and runs its convolutions in u8/i8
(``LowPrecision`` transformations); the IR is that model saved with full-precision weights
(``compress_to_fp16=False``) and the file's metadata in its ``rt_info`` (``mnv2_tasks_meta``,
JSON). ``OvModel`` compiles it for the CPU with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with
AVX-512 BF16 / AMX OpenVINO's default is bf16, which is not the fp32 the metric is compared with.
Install with ``pip install mnv2_tasks[openvino]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .model_file import ExportedModel
from .onnx_export import check_onnx_file, onnx_metadata

__all__ = ["write_openvino", "write_target", "OvModel", "ov_compile", "META_KEY"]

META_KEY = "mnv2_tasks_meta"


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise ImportError("OpenVINO is not installed: pip install 'mnv2_tasks[openvino]' (or pip install openvino)") from None
    return ov


def write_openvino(onnx_path: str | Path, xml_path: str | Path, static_batch: int | None = None) -> Path:
    """Convert ``onnx_path`` to OpenVINO IR at ``xml_path`` (and its ``.bin``), metadata carried over.

    ``static_batch``: fix the batch (the IR is dynamic in the batch otherwise, like the ONNX file).
    """
    ov = _openvino()
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    meta = onnx_metadata(check_onnx_file(onnx_path))
    model = ov.convert_model(str(onnx_path))
    if static_batch is not None:
        shape = list(model.input(0).get_partial_shape())
        model.reshape({0: [static_batch, *[d.get_length() for d in shape[1:]]]})
    meta["openvino"] = ov.get_version().split("-")[0]
    model.set_rt_info(json.dumps(meta), META_KEY)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def write_target(job, path: Path) -> Path:
    """The OpenVINO target's file: the job's ONNX file (uint8 activations) converted to IR at ``path``."""
    return write_openvino(job.onnx_file(), path)


def ov_compile(model_or_path, threads: int = 2, precision: str = "f32"):
    """Compile for the CPU: ``threads`` inference threads, latency hint, ``precision`` (f32 | bf16 | f16) for float ops."""
    ov = _openvino()
    core = ov.Core()
    model = core.read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    return core.compile_model(model, "CPU", config)


class OvModel(ExportedModel):
    """An OpenVINO IR file (``.xml``) of this package, callable like the network it was exported from."""

    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        ov = _openvino()
        self.path, self.threads = Path(path), threads
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise FileNotFoundError(f"{self.path}: OpenVINO IR needs the .xml and its .bin side by side; "
                                    "export one with tools/export.py --format openvino")
        try:
            model = ov.Core().read_model(str(self.path))
            meta = json.loads(model.get_rt_info(META_KEY).astype(str)) if model.has_rt_info(META_KEY) else {}
            self.compiled = ov_compile(model, threads)
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{self.path}: OpenVINO cannot load this model ({str(e)[:300]}); "
                             "re-export it with tools/export.py --format openvino") from None
        self._init_meta(meta)
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def _run(self, x: np.ndarray) -> list:
        res = self.request.infer({0: x})
        return [res[o] for o in self.compiled.outputs]

    def profile(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        """Milliseconds per run of each node type [kernel] on ``x`` (OpenVINO's performance counters, ``runs`` runs)."""
        from collections import defaultdict

        core = _openvino().Core()
        cm = core.compile_model(core.read_model(str(self.path)), "CPU",
                                {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32"})
        req = cm.create_infer_request()
        totals: dict[str, float] = defaultdict(float)
        for _ in range(runs):
            req.infer({0: x})
            for info in req.get_profiling_info():
                totals[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1000 / runs
        return dict(totals)
