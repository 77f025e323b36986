"""The model contract: a new head is one file. A toy head defined only here goes through training,
post-training quantization, ONNX export and ONNX Runtime evaluation; and the package's module graph
stays free of import circles and of imports from tools/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mnv2_tasks.models import MobileNetV2Backbone, TaskNet
from mnv2_tasks.models.export_formats import FORMATS

PKG = Path(__file__).resolve().parents[1] / "mnv2_tasks"


class ToyHead(TaskNet):
    """A classifier of another shape than MobileNetV2's own: a 1x1 conv on the stride-16 tap, then global average pooling."""

    task = "classification"
    export_formats = {"logits": FORMATS["logits"]}

    def __init__(self, num_classes: int, width_mult: float = 0.35) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone(width_mult, out_indices=(3,))
        self.classifier = nn.Conv2d(self.backbone.feature_info.channels(0), num_classes, 1)
        self.num_classes = num_classes

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.classifier(self.backbone(images)[0])  # (N, K, H/16, W/16)
        return {"logits": x.mean(dim=(2, 3))}

    def train_outputs(self, raw, images, targets=None):
        return raw["logits"]

    def postprocess(self, raw, image_size):
        return raw["logits"]

    def export_outputs(self, raw, image_size, fmt):
        return (raw["logits"],)


def build_toy_head(num_classes: int, width_mult: float = 0.35) -> ToyHead:
    return ToyHead(num_classes, width_mult)


@pytest.mark.slow  # ~20 s: keeps `make test` near 3 minutes; CI runs it
def test_a_new_head_trains_quantizes_exports_and_evaluates_in_onnx_runtime(make_cfg):
    from mnv2_tasks.train import train

    cfg = make_cfg("task=classification", "model.net._target_=test_contract.build_toy_head", "~model.net.dropout", "~model.net.padding",
                   "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=1",
                   "quant=ptq", "quant.num_calibration_images=8")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "torch_fp32_top1", "torch_int8_top1", "onnx_fp32_top1", "onnx_int8_top1"):
        assert 0.0 <= saved[key] <= 1.0, key
    # the float file is the float network, so ORT scores it exactly as PyTorch does
    assert saved["onnx_fp32_top1"] == pytest.approx(saved["torch_fp32_top1"], abs=1e-6)
    assert (out / "model.int8.onnx").is_file() and metrics["onnx_int8_file"] == "model.int8.onnx"
    from mnv2_tasks.quant.ort_runner import OrtModel

    model = OrtModel(out / "model.int8.onnx")
    assert model.task == "classification" and model.num_classes == 4 and model.input_spec["image_size"] == [64, 64]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_a_head_without_export_formats_is_refused_by_quantization():
    from mnv2_tasks.quant.pt2e import prepare

    class NoExport(ToyHead):
        export_formats = {}

    with pytest.raises(ValueError, match="declares no export format"):
        prepare(NoExport(4), torch.randn(2, 3, 48, 48), qat=False)


def _imports(path: Path, module: str) -> set[str]:
    """Every module of the package that ``path`` imports (at any depth of the file), resolved to dotted names."""
    tree = ast.parse(path.read_text())
    pkg_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg_parts[: len(pkg_parts) - node.level + 1] if node.level else []
            name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return found


def test_no_import_circles_and_nothing_from_tools_or_outside():
    modules = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = f
    graph = {}
    for name, f in modules.items():
        imported = _imports(f, name if f.name != "__init__.py" else name + ".__init__")
        assert not any(i.split(".")[0] in ("tools", "benchmarks", "tests") for i in imported), f"{f} imports from tools/"
        # edges between the package's own modules (a package's __init__ re-exports do not count as a cycle)
        graph[name] = {i for i in imported if i in modules and i != name and modules[i].name != "__init__.py"}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(m):], m]))
            if m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_no_package_file_over_400_lines():
    long = {str(f.relative_to(PKG)): n for f in PKG.rglob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert not long, long


def test_every_task_has_a_network_that_declares_its_frame_result():
    from mnv2_tasks.models.contract import TASKS, TaskNet
    from mnv2_tasks.models.results import frame_result_of

    for task in TASKS:
        assert TaskNet.for_task(task).task == task and callable(frame_result_of(task))
    with pytest.raises(ValueError, match="known"):
        frame_result_of("tracking")


def test_tasks_and_evaluation_read_data_modules_through_the_declared_contract():
    """Every attribute that tasks/, evaluation, QAT/PTQ and the callbacks read off a data module is one that
    TaskDataModule declares (its CONTRACT), as the model side reads only TaskNet's declarations."""
    import ast

    from mnv2_tasks.data.loaders import TaskDataModule

    root = Path(__file__).resolve().parents[1] / "mnv2_tasks"
    files = [*(root / "tasks").glob("*.py"), *(root / "quant").glob("*.py"), root / "evaluate.py", root / "callbacks.py",
             root / "train.py"]
    read = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            named = isinstance(owner, ast.Name) and owner.id in ("dm", "datamodule")
            via_trainer = isinstance(owner, ast.Attribute) and owner.attr == "datamodule"
            if named or via_trainer:
                read.setdefault(node.attr, set()).add(f.name)
    assert read, "the scan found no data-module reads"
    undeclared = {k: v for k, v in read.items() if k not in TaskDataModule.CONTRACT}
    assert not undeclared, f"read but not declared on TaskDataModule: {undeclared}"
    for name in TaskDataModule.CONTRACT:
        assert hasattr(TaskDataModule, name) or name in TaskDataModule.__annotations__, name
