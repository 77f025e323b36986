"""NCNN (Tencent's runtime for ARM boards: Rockchip, Allwinner, Raspberry Pi companions): ``.ncnn.param`` + ``.bin``
through ``pnnx``, and ``NcnnModel`` to run it in the ``ncnn`` wheel. ``pip install 'mnv2_tasks[ncnn]'``.

The float network's deploy module is traced and converted by pnnx with fp32 weights (``fp16=False``); NCNN has no
NMS layer for this graph, so a detector is written in its NMS-free output format (``decoded``: boxes and per-class
scores), and ``NcnnModel`` runs the same ``select_detections`` on them as every other runtime (as ExecuTorch's).
The file's metadata (task, output format, input spec) is a JSON companion ``<stem>.ncnn.json``.

Precision: ``NcnnModel`` runs fp32 storage and arithmetic by default, which reproduces PyTorch (tested); NCNN's
own default (fp16 storage and arithmetic where the CPU has them, ``fp16=True``) is faster on ARM and differs by
about 1e-3. int8: NCNN quantizes with its ``ncnn2table`` / ``ncnn2int8`` tools, which the pip wheels do not ship,
so this target writes fp32 only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from .model_file import ExportedModel

__all__ = ["write_target", "write_ncnn", "NcnnModel"]


def _ncnn():
    try:
        import ncnn
    except ImportError:
        raise ImportError("NCNN is not installed: pip install 'mnv2_tasks[ncnn]' (the ncnn and pnnx wheels)") from None
    return ncnn


def write_target(job, path: Path) -> Path:
    """The NCNN target's files (``job.core`` must be None: fp32): ``path`` (.ncnn.param), its ``.bin`` and ``.json``."""
    if job.core is not None:
        raise ValueError("the NCNN target writes fp32 files only (NCNN's int8 tools are not in its pip wheels)")
    module, meta = job.nms_free_module(None)
    return write_ncnn(module, job.example[:1], path, module.output_names, meta)


def write_ncnn(module: torch.nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str],
               metadata: dict[str, str]) -> Path:
    """Trace ``module`` on one image, convert it with pnnx (fp32 weights), write ``path``, ``.bin`` and ``.json``."""
    try:
        import pnnx
    except ImportError:
        raise ImportError("pnnx is not installed: pip install 'mnv2_tasks[ncnn]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mnv2_pnnx_") as tmp:  # pnnx writes a TorchScript file and more beside it
        with torch.no_grad():
            pnnx.export(module.eval(), str(Path(tmp) / "model.pt"), example, ncnnparam=str(path),
                        ncnnbin=str(path.with_suffix(".bin")), pnnxparam=str(Path(tmp) / "p.param"),
                        pnnxbin=str(Path(tmp) / "p.bin"), pnnxpy=str(Path(tmp) / "p.py"),
                        pnnxonnx=str(Path(tmp) / "p.onnx"), ncnnpy=str(Path(tmp) / "n.py"), fp16=False)
    meta = {**{k: str(v) for k, v in metadata.items()}, "mnv2_output_names": json.dumps(list(output_names))}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


class NcnnModel(ExportedModel):
    """A ``.ncnn.param`` file of this package in NCNN, callable like the network it was exported from."""

    runtime = "ncnn"

    def __init__(self, path: str | Path, threads: int = 2, fp16: bool = False) -> None:
        ncnn = _ncnn()
        self.path = Path(path)
        weights, meta_file = self.path.with_suffix(".bin"), self.path.with_suffix(".json")
        for f in (self.path, weights, meta_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: NCNN file not found (a model is {self.path.name} with its .bin and .json); "
                                        "export one with tools/export.py --format ncnn")
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = int(threads)
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = bool(fp16)
        if self.net.load_param(str(self.path)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ValueError(f"{self.path}: NCNN cannot load this model; re-export it with tools/export.py --format ncnn")
        self._init_meta(json.loads(meta_file.read_text()))
        self._inputs, self._outputs = list(self.net.input_names()), list(self.net.output_names())

    def _run(self, x: np.ndarray) -> list:
        ncnn = _ncnn()
        per_image = []
        for image in np.ascontiguousarray(x, dtype=np.float32):  # NCNN runs one image (C, H, W) at a time
            ex = self.net.create_extractor()
            ex.input(self._inputs[0], ncnn.Mat(image).clone())
            outs = []
            for name in self._outputs:
                ret, mat = ex.extract(name)
                if ret != 0:
                    raise RuntimeError(f"{self.path}: NCNN failed to compute output {name} (code {ret})")
                outs.append(np.array(mat))
            per_image.append(outs)
        return [np.stack([p[i] for p in per_image]) for i in range(len(self._outputs))]

