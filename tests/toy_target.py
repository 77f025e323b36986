"""A toy deployment target for the tests: PyTorch's own ExportedProgram (``.toy.pt2``) as a "runtime".

It is what adding a runtime takes: a writer, a runner (an ``ExportedModel``) and one ``Target`` record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mnv2_tasks.quant.deploy import DeployModule, file_metadata
from mnv2_tasks.quant.model_file import ExportedModel
from mnv2_tasks.quant.targets import Target


def write_toy(job, path: Path) -> Path:
    module = DeployModule(job.core, job.net, job.fmt).eval()
    meta = {**file_metadata(job.net, module.fmt, job.example, job.opset), **{k: str(v) for k, v in job.metadata.items()},
            "output_names": json.dumps(module.output_names)}
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (job.example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={"mnv2_metadata": json.dumps(meta)})
    return Path(path)


class ToyModel(ExportedModel):
    runtime = "torch.export"

    def __init__(self, path, threads: int = 2) -> None:
        self.path = Path(path)
        extra = {"mnv2_metadata": ""}
        program = torch.export.load(str(self.path), extra_files=extra)
        self._init_meta(json.loads(extra["mnv2_metadata"]))
        self.output_names = json.loads(self.meta["output_names"])
        self.module = program.module()

    def _run(self, x: np.ndarray) -> list:
        with torch.no_grad():
            return [o.numpy() for o in self.module(torch.from_numpy(x))]


TOY = Target("toy", "Toy (torch.export)", ".toy.pt2", ("u8", "s8", "s8sym"), ("fp32", "int8"),
             writer=write_toy, runner=ToyModel)
