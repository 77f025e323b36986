"""The model contract: what every task network declares, so that nothing outside ``models/`` asks.

Training (``tasks/``), quantization (``quant/pt2e.py``), export to every deployment target
(``quant/deploy.py``, ``quant/targets.py``), evaluation in each runtime, the Predictor's frame results
(``models/results.py``), pretrained loading and freezing read these declarations; none of them looks at
a network's type. A new head for an existing task is one file: subclass ``TaskNet``, fill in the members
below, and every one of those paths takes it (``tests/test_contract.py`` does this with a toy head).

A network's life is split in two:

- ``deploy_forward(images) -> dict[str, Tensor]``: the learned part, the same in train and eval
  mode. This is what ``torch.export`` captures, what QAT / PTQ quantize and what goes into the
  ONNX file. Its outputs are named (``{"logits"}``, ``{"out", "aux"}``,
  ``{"bbox_regression", "cls_logits"}``).
- everything after it is non-learned and reads only those raw outputs:
  ``train_outputs`` (what the task's training step consumes), ``postprocess`` (what ``forward``
  returns in eval mode, torchvision style) and ``export_outputs`` (the exported file's outputs,
  in one of ``export_formats``). A quantized graph in place of ``deploy_forward`` therefore
  answers exactly like the float network (``quant.pt2e.QuantNet``).

What an exported file's outputs mean is a property of the *format*, not of the network: the
readers in ``export_formats.py`` turn them back into eval-mode outputs for any runtime.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

__all__ = ["TaskNet", "TASKS", "image_hw", "pad_batch", "net_class", "warm_batchnorm"]

TASKS = ("classification", "detection", "segmentation", "multitask")


def image_hw(image_size) -> tuple[int, int]:
    """(H, W) from a size pair, an int, or an image batch (N, C, H, W)."""
    if isinstance(image_size, torch.Tensor) and image_size.dim() >= 3:
        image_size = image_size.shape[-2:]
    if isinstance(image_size, (int, float)):
        return int(image_size), int(image_size)
    return int(image_size[0]), int(image_size[1])


@torch.no_grad()
def warm_batchnorm(net: nn.Module, batches, passes: int = 1) -> nn.Module:
    """BatchNorm statistics of an untrained ``net`` from real images (``batches`` of normalized (N, 3, H, W)), so that
    its outputs depend on its input as a trained network's do (benchmarks, parity tests); returns it in eval mode."""
    net.train()
    for _ in range(passes):
        for b in batches:
            net.deploy_forward(b)
    return net.eval()


def net_class(target: str) -> type:
    """The ``TaskNet`` class a config's ``_target_`` builds (a class, or a builder annotated with what it returns),
    so that a declaration can be read without building the network."""
    import typing

    from hydra.utils import get_object

    obj = get_object(target)
    if isinstance(obj, type):
        return obj
    built = typing.get_type_hints(obj).get("return")
    if not (isinstance(built, type) and issubclass(built, TaskNet)):
        raise TypeError(f"{target}: a network builder must be annotated with the TaskNet class it returns (-> SSDLite)")
    return built


def pad_batch(images: torch.Tensor, n: int = 2) -> torch.Tensor:
    """``images`` with at least ``n`` samples (repeating the first): a capture example whose batch
    dimension ``torch.export`` keeps dynamic instead of specialising it to 1."""
    if images.shape[0] >= n:
        return images
    return torch.cat([images, images[:1].expand(n - images.shape[0], *images.shape[1:])]).contiguous()


class TaskNet(nn.Module):
    """Base class of the package's task networks; subclasses declare what the rest of the package asks.

    Class attributes:
        task: ``"classification"``, ``"detection"``, ``"segmentation"`` or ``"multitask"``: the task module, data
            and metric code the network goes with.
        export_formats: ``{format: output names}`` of the exported file; the first is the default.
            Formats are read back by ``export_formats.outputs_from_export``.
        capture_dynamic_hw: capture with dynamic height and width too (networks that train on
            crops and evaluate on whole images).
        takes_mobilenetv2_weights: ``pretrained_target()`` accepts a MobileNetV2 weights file
            (the embedded pretraining applies).

        frame_result: how eval-mode outputs become one frame's result (``models/results.py``): called as
            ``frame_result(out, i, input_hw, frame_hw, class_names, category_ids)``.

    Instance attribute ``num_classes`` (detection: categories + background).
    """

    task: ClassVar[str] = ""
    frame_result: ClassVar[Callable[..., dict]]
    _by_task: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "frame_result" in cls.__dict__:  # a staticmethod declared by the class
            TaskNet._by_task.setdefault(cls.task, cls)

    @classmethod
    def for_task(cls, task: str) -> type:
        """The first network class that declares ``task`` and its frame result; an unknown task names the known ones.
        (Importing ``mnv2_tasks.models`` imports, and so registers, the package's networks.)"""
        if task not in TaskNet._by_task:
            raise ValueError(f"no network declares task {task!r}; known: {sorted(TaskNet._by_task)}")
        return TaskNet._by_task[task]
    export_formats: ClassVar[dict[str, tuple[str, ...]]] = {}
    capture_dynamic_hw: ClassVar[bool] = False
    takes_mobilenetv2_weights: ClassVar[bool] = True
    num_classes: int

    # ---- what training asks -------------------------------------------------------------------
    def backbone_parts(self) -> list[nn.Module]:
        """The modules ``freeze_backbone`` freezes (weights and BatchNorm statistics)."""
        return [self.backbone]

    def pretrained_target(self) -> nn.Module:
        """The module a MobileNetV2 weights file (torchvision, timm, this package) is loaded into."""
        return self.backbone

    # ---- the learned part ---------------------------------------------------------------------
    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) normalized images -> named raw outputs; captured, quantized and exported."""
        raise NotImplementedError

    # ---- the non-learned part: reads raw outputs only ----------------------------------------
    def train_outputs(self, raw: dict[str, torch.Tensor], images: torch.Tensor, targets: Any = None) -> Any:
        """What the task's training step consumes (default: the raw outputs themselves)."""
        return raw

    def postprocess(self, raw: dict[str, torch.Tensor], image_size) -> Any:
        """Eval-mode outputs from raw outputs (classification / segmentation logits, detection dicts)."""
        raise NotImplementedError

    def export_outputs(self, raw: dict[str, torch.Tensor], image_size, fmt: str) -> tuple[torch.Tensor, ...]:
        """The exported file's outputs in format ``fmt`` (names: ``export_formats[fmt]``); exportable code."""
        raise NotImplementedError

    def use_postprocess(self, mode: str = "eval", **overrides) -> "TaskNet":
        """Select a post-processing preset (detection: ``"eval"`` or ``"deploy"``); one preset here."""
        if mode != "eval" or overrides:
            raise ValueError(f"{type(self).__name__} ({self.task}) has a single post-processing ('eval') without settings")
        return self

    def target_coverage(self, boxes: torch.Tensor, image_size) -> dict | None:
        """Detection: how well the network's anchors cover these ground-truth boxes (xyxy input pixels); else ``None``."""
        return None

    def export_metadata(self) -> dict[str, str]:
        """What a runtime needs to read the exported outputs back (e.g. NMS settings), as strings."""
        return {}

    def unsupported_targets(self) -> dict[str, str]:
        """``{deployment target: why}`` for the targets whose converter or runtime cannot take this network: what its
        layers declare (a module's class attribute ``deploy_refusals``). ``write_targets`` skips them, saying why."""
        reasons: dict[str, str] = {}
        for module in self.modules():
            reasons.update(getattr(type(module), "deploy_refusals", None) or {})
        return reasons

    # ---- the interface users see --------------------------------------------------------------
    def forward(self, images: torch.Tensor, targets: Any = None):
        """Training: ``train_outputs``; eval: ``postprocess`` (torchvision's interface)."""
        raw = self.deploy_forward(images)
        if self.training:
            return self.train_outputs(raw, images, targets)
        return self.postprocess(raw, images.shape[-2:])

    @classmethod
    def check_format(cls, fmt: str | None) -> str:
        """``fmt`` (or the default format), refused with the choices when this network has no such format."""
        if not cls.export_formats:
            raise ValueError(f"{cls.__name__} declares no export format: it cannot be exported or quantized")
        fmt = fmt or next(iter(cls.export_formats))
        if fmt not in cls.export_formats:
            raise ValueError(f"outputs={fmt!r} is not available for {cls.task}; choose one of {list(cls.export_formats)}")
        return fmt
