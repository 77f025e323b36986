"""A PT2E quantizer whose QDQ graphs ONNX Runtime, OpenVINO, XNNPACK and TensorRT turn into integer kernels.

Weights are int8 per-channel symmetric (axis 0, -127..127) in every scheme; the activation
type is the scheme (``SCHEMES``), since each runtime wants its own:

- ``u8``: uint8 per-tensor affine, as ORT's U8S8 x86 kernels want (OpenVINO reads it too);
- ``s8``: int8 per-tensor affine, which XNNPACK (ExecuTorch) wants; ORT and OpenVINO run it too;
- ``s8sym``: int8 per-tensor symmetric (zero point 0), the only activation type TensorRT accepts
  in explicit Q/DQ; XNNPACK, ORT and OpenVINO run it too, so one QAT run serves every target.
  It spends one bit of the post-ReLU range (BENCHMARKS.md: what that costs). Each conv / linear is one pattern, ``conv [-> batch_norm] [->
relu | relu6]``, quantized at its input, weight and pattern output; a residual ``add`` gets
Q/DQ on both inputs and its output, and is never fused into the conv before it. In ORT's
graph optimizer that gives ``QLinearConv`` (the ReLU6 ``Clip`` is folded into the output
quantization), ``QLinearAdd`` and ``QGemm``; torchao's ``X86InductorQuantizer`` fuses
conv + add, which ORT cannot run in int8 (issue 5).

Ops that only move data (pooling, flatten, view, upsampling, ...) share the quantization
parameters of their input, so the int8 tensor flows through them unchanged. Everything
else (detection box decoding, NMS, softmax) stays float.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e import (
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torchao.quantization.pt2e.quantizer import (
    QuantizationAnnotation,
    QuantizationConfig,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
)

__all__ = ["OrtQuantizer", "ort_quantization_config", "SCHEMES", "check_scheme"]

# activation (dtype, quant_min, quant_max, qscheme) per scheme
SCHEMES: dict[str, tuple[torch.dtype, int, int, torch.qscheme]] = {
    "u8": (torch.uint8, 0, 255, torch.per_tensor_affine),
    "s8": (torch.int8, -128, 127, torch.per_tensor_affine),
    "s8sym": (torch.int8, -128, 127, torch.per_tensor_symmetric),
}


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {list(SCHEMES)} (quant.scheme)")
    return scheme

_ANN = "quantization_annotation"
aten = torch.ops.aten

_CONV = {aten.conv2d.default, aten.conv2d.padding, aten.linear.default}
_BN = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
_ACT = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default}
_ADD = {aten.add.Tensor, aten.add_.Tensor}
_CAT = {aten.cat.default, aten.concat.default}
# ops whose output is a rearrangement / local average of the input: same scale and zero point
_SHARE = {
    aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.max_pool2d.default,
    aten.mean.dim, aten.flatten.using_ints, aten.view.default, aten.reshape.default,
    aten.permute.default, aten.squeeze.dim, aten.unsqueeze.default,
    aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec, aten.upsample_nearest2d.default,
    aten.upsample_bilinear2d.default, aten.relu.default, aten.relu_.default, aten.hardtanh.default,
    aten.hardtanh_.default, aten.slice.Tensor, aten.contiguous.default, aten.clone.default,
}


def ort_quantization_config(is_qat: bool, scheme: str = "u8") -> QuantizationConfig:
    """``scheme``'s activations (histogram observer for PTQ, moving-average fake quant for QAT),
    int8 per-channel symmetric weights, float bias (the runtimes quantize it to int32 themselves)."""
    dtype, qmin, qmax, qscheme = SCHEMES[check_scheme(scheme)]
    eps = {"eps": 2**-12}
    if is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **eps)
        w_ctr = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, **eps)
    else:
        act_ctr = HistogramObserver.with_args(**eps)
        w_ctr = PerChannelMinMaxObserver.with_args(**eps)
    act = QuantizationSpec(dtype=dtype, quant_min=qmin, quant_max=qmax, qscheme=qscheme, observer_or_fake_quant_ctr=act_ctr)
    # -127..127 (not -128): symmetric, and safe from the VPMADDUBSW saturation of U8S8 kernels
    weight = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric,
                              ch_axis=0, observer_or_fake_quant_ctr=w_ctr)
    return QuantizationConfig(act, act, weight, None, is_qat)


def _is_float_tensor(n: Any) -> bool:
    if not isinstance(n, Node):
        return False
    val = n.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _annotated(n: Node) -> bool:
    return _ANN in n.meta and n.meta[_ANN]._annotated


def _set(n: Node, input_qspec_map: dict | None = None, output_qspec=None) -> None:
    n.meta[_ANN] = QuantizationAnnotation(input_qspec_map=input_qspec_map or {}, output_qspec=output_qspec, _annotated=True)


def _single_user(n: Node, targets: set) -> Node | None:
    users = [u for u in n.users if not (u.op == "call_function" and u.target is operator.getitem and not u.users)]
    if len(users) == 1 and users[0].op == "call_function" and users[0].target in targets:
        return users[0]
    return None


def _has_output_qspec(n: Node) -> bool:
    return _annotated(n) and n.meta[_ANN].output_qspec is not None


class OrtQuantizer(Quantizer):
    """Annotates an exported (ATen) graph for ONNX Runtime's QDQ int8 kernels; see the module docstring.

    ``skip_output_of`` lists node-name substrings whose pattern output stays float (for example
    a detection head's box regression, when its precision matters more than its speed).
    """

    def __init__(self, is_qat: bool, skip_output_of: tuple[str, ...] = (), scheme: str = "u8") -> None:
        super().__init__()
        self.scheme = scheme
        self.config = ort_quantization_config(is_qat, scheme)
        self.skip_output_of = tuple(skip_output_of)

    # -- annotation -----------------------------------------------------------------------------
    def annotate(self, model: GraphModule) -> GraphModule:
        cfg = self.config
        for n in model.graph.nodes:
            if n.op == "call_function" and n.target in _CONV and not _annotated(n):
                self._annotate_pattern(n)
        for n in model.graph.nodes:
            if n.op != "call_function" or _annotated(n):
                continue
            if n.target in _ADD and all(_is_float_tensor(a) for a in n.args[:2]):
                # num_batches_tracked += 1 and scalar adds are not activations
                a, b = n.args[:2]
                _set(n, {a: cfg.input_activation, b: cfg.input_activation}, cfg.output_activation)
            elif n.target in _CAT:
                inputs = [a for a in n.args[0] if _is_float_tensor(a)]
                if inputs and len(inputs) == len(n.args[0]):
                    first = inputs[0]
                    qmap = {first: cfg.input_activation}
                    qmap.update({a: SharedQuantizationSpec((first, n)) for a in inputs[1:]})
                    _set(n, qmap, SharedQuantizationSpec((first, n)))
        self._propagate(model)
        return model

    def _annotate_pattern(self, conv: Node) -> None:
        cfg = self.config
        x, w = conv.args[0], conv.args[1]
        if not (_is_float_tensor(x) and isinstance(w, Node)):
            return
        qmap = {x: cfg.input_activation, w: cfg.weight}  # order matters: input, weight (qat_utils)
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, Node):
            qmap[bias] = cfg.bias
        _set(conv, qmap)
        out, nodes = conv, [conv]
        bn = _single_user(out, _BN)
        if bn is not None:
            out = bn
            nodes.append(bn)
        act = _single_user(out, _ACT)
        if act is not None and _is_relu_like(act):
            out = act
            nodes.append(act)
        if any(s in out.name for s in self.skip_output_of):
            out_qspec = None
        else:
            out_qspec = cfg.output_activation
        for n in nodes[1:]:
            _set(n)  # inside the pattern: no observer between conv, bn and activation
        out.meta[_ANN].output_qspec = out_qspec

    def _propagate(self, model: GraphModule) -> None:
        """Data-movement ops whose input is quantized share its observer, input and output."""
        for n in model.graph.nodes:
            if n.op != "call_function" or n.target not in _SHARE or _annotated(n):
                continue
            prev = n.args[0]
            if not isinstance(prev, Node) or not _has_output_qspec(prev):
                continue
            shared = SharedQuantizationSpec(prev)
            _set(n, {prev: shared}, shared)

    def validate(self, model: GraphModule) -> None:
        return None


def _is_relu_like(n: Node) -> bool:
    """ReLU, or hardtanh(x, 0, max) (ReLU6): clamps at 0, so ORT folds it into the uint8 output."""
    if n.target in (aten.relu.default, aten.relu_.default):
        return True
    lo = n.args[1] if len(n.args) > 1 else -1.0
    return float(lo) == 0.0
