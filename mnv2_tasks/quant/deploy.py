"""What goes into an exported file: a network's deploy core plus the output format it declares.

The core computes the network's ``deploy_forward`` (float: ``DeployForward(net)``; int8: the
converted PT2E graph); ``DeployModule`` adds ``net.export_outputs`` in one of the network's
``export_formats`` (``models/export_formats.py`` says what each format holds and reads it back).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.fx import GraphModule

from .onnx_export import OPSET, export_onnx
from .pt2e import DeployForward, set_mode

__all__ = ["DeployModule", "export_deploy", "file_metadata"]


class DeployModule(nn.Module):
    """``core`` (images -> raw outputs; ``None``: the float network's own) plus ``net``'s export format ``fmt``."""

    def __init__(self, core: nn.Module | None, net: nn.Module, fmt: str | None = None) -> None:
        super().__init__()
        self.fmt = net.check_format(fmt)
        self.core = core if core is not None else DeployForward(net)
        object.__setattr__(self, "net", net)  # the non-learned part (decoding, NMS), not a submodule

    def train(self, mode: bool = True):
        # a captured graph switches modes the torchao way; an nn.Module the usual way
        self.training = mode
        if isinstance(self.core, GraphModule):
            set_mode(self.core, mode)
        else:
            self.core.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.export_outputs(self.core(images), images.shape[-2:], self.fmt)

    @property
    def output_names(self) -> list[str]:
        return list(self.net.export_formats[self.fmt])


def nms_free_format(net: nn.Module, fmt: str | None) -> str:
    """``fmt`` (default: the network's first) without NMS, for runtimes with no NMS kernel (ExecuTorch, NCNN, Core ML):
    their runner runs the same ``select_detections`` on the decoded outputs."""
    from ..models.export_formats import without_nms

    return without_nms(net.check_format(fmt), net.export_formats)


def file_metadata(net: nn.Module, fmt: str, example: torch.Tensor, opset: int = OPSET) -> dict[str, str]:
    """What a runtime needs to read the file back: task, format, classes, input size, the network's own settings."""
    meta = {"task": net.task, "mnv2_outputs": fmt, "opset": str(opset), "num_classes": str(net.num_classes),
            # the export's input size, as the one form every record uses ([H, W]); the file's record
            # (checkpoint.MODEL_FIELD) says how evaluation fed the network
            "export_image_size": json.dumps(list(example.shape[-2:]))}
    meta.update(net.export_metadata())
    return meta


def export_deploy(
    core: nn.Module | None,
    net: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    fmt: str | None = None,
    metadata: dict | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``core`` (``None``: the float ``net``) with ``net``'s format ``fmt`` to ``path`` (dynamic batch)."""
    module = DeployModule(core, net, fmt).train(False)
    meta = {**file_metadata(net, module.fmt, example, opset), **{k: str(v) for k, v in (metadata or {}).items()}}
    return export_onnx(module, example, path, module.output_names, metadata=meta, opset=opset)
