"""What goes into the ONNX file for each network, and the float / int8 export of a network in one call.

The captured core computes ``deploy_view(net)`` (float: the view itself; int8: the converted
PT2E graph); ``DeployModule`` adds the task's output format on top:

- classifier: ``logits`` (N, K)
- deeplabv3: ``logits`` (N, K, H, W), or ``mask`` (N, H, W) int64 with ``outputs="argmax"``
- ssdlite: ``outputs="nms"``: ``boxes`` (N, D, 4) xyxy pixels, ``scores`` (N, D), ``labels``
  (N, D) int64, ``num_detections`` (N,) int64 (rows past it are padding); ``outputs="raw"``:
  ``boxes`` (N, A, 4) decoded, ``scores`` (N, A, K) per class, for runtimes with their own NMS.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torch.fx import GraphModule

from .onnx_export import OPSET, export_onnx
from .pt2e import set_mode

__all__ = ["DeployModule", "OUTPUTS", "export_deploy", "output_names", "postprocess_meta"]

# output formats per network kind; the first is the default
OUTPUTS = {"classifier": ("logits",), "deeplabv3": ("logits", "argmax"), "ssdlite": ("nms", "raw")}


def output_names(kind: str, outputs: str) -> list[str]:
    if kind == "classifier":
        return ["logits"]
    if kind == "deeplabv3":
        return ["mask"] if outputs == "argmax" else ["logits"]
    if kind == "ssdlite":
        return ["boxes", "scores", "labels", "num_detections"] if outputs == "nms" else ["boxes", "scores"]
    raise ValueError(kind)


class DeployModule(nn.Module):
    """``core`` (images -> deploy view outputs) plus the output format of ``kind`` / ``outputs``."""

    def __init__(self, core: nn.Module, kind: str, outputs: str, float_net: nn.Module | None = None) -> None:
        super().__init__()
        if outputs not in OUTPUTS[kind]:
            raise ValueError(f"outputs={outputs!r} is not available for {kind}; choose one of {OUTPUTS[kind]}")
        self.core = core
        self.kind = kind
        self.outputs = outputs
        object.__setattr__(self, "float_net", float_net)  # SSDLite's anchors and decoding, not a submodule

    def train(self, mode: bool = True):
        # a captured graph switches modes the torchao way; an nn.Module the usual way
        self.training = mode
        if isinstance(self.core, GraphModule):
            set_mode(self.core, mode)
        else:
            self.core.train(mode)
        return self

    def forward(self, images: torch.Tensor):
        out = self.core(images)
        if self.kind == "classifier":
            return out
        if self.kind == "deeplabv3":
            logits = out["out"]
            return logits.argmax(1) if self.outputs == "argmax" else logits
        # ssdlite: decoding and NMS are the detection model's own exportable code
        net = self.float_net
        hw = images.shape[-2:]
        if self.outputs == "raw":
            return net.decode_raw(out, hw)  # boxes (N, A, 4), scores (N, A, C-1)
        return net.postprocess_export(out, hw)  # boxes (N, D, 4), scores, labels, num_detections


def export_deploy(
    core: nn.Module,
    kind: str,
    example: torch.Tensor,
    path: str | Path,
    outputs: str | None = None,
    float_net: nn.Module | None = None,
    metadata: dict | None = None,
    opset: int = OPSET,
) -> Path:
    """Export ``core`` with ``kind``'s output format to ``path`` (dynamic batch); metadata records kind and format."""
    outputs = outputs or OUTPUTS[kind][0]
    module = DeployModule(core, kind, outputs, float_net).train(False)
    meta = {"mnv2_kind": kind, "mnv2_outputs": outputs, "opset": str(opset)}
    num_classes = getattr(float_net, "num_classes", None)
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    meta["image_size"] = f"{example.shape[-2]}x{example.shape[-1]}"
    if kind == "ssdlite":
        meta.update(postprocess_meta(float_net))
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return export_onnx(module, example, path, output_names(kind, outputs), metadata=meta, opset=opset)




def postprocess_meta(net: nn.Module) -> dict[str, str]:
    """SSDLite's post-processing settings, recorded in the file (and used to run NMS on raw outputs)."""
    from dataclasses import asdict

    cfg = asdict(net.postprocess_cfg)
    return {"postprocess_mode": str(net.postprocess_mode), **{f"postprocess_{k}": str(v) for k, v in cfg.items()},
            "score_fn": str(net.score_fn)}
