"""torchao's PT2E flow around this package's networks: capture, prepare (QAT or PTQ), convert.

A network is captured with ``torch.export.export`` and a dynamic batch ``Dim``; what is
captured is the network's ``deploy_forward`` (the learned part of the model contract,
``models/contract.py``: named raw outputs). ``QuantNet`` puts a prepared or converted graph back
behind the network's own interface (``deploy_forward``, ``forward`` in train and eval mode and
everything non-learned), so that Lightning's loop, the task's loss and metric code keep working on it.

Never call ``.train()`` / ``.eval()`` on a captured graph directly: ``set_mode`` (and
``QuantNet.train``, which Lightning calls) swap the batch-norm and dropout ops as torchao
requires, and keep frozen batch-norm statistics frozen.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn
from torch.export import Dim
from torch.fx import GraphModule
from torchao.quantization.pt2e import (
    disable_observer,
    enable_observer,
    move_exported_model_to_eval,
    move_exported_model_to_train,
)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

from ..models.contract import pad_batch
from .pattern_cache import cached_patterns
from .quantizer import OrtQuantizer

__all__ = [
    "QuantNet", "DeployForward", "capture", "prepare", "calibrate", "convert", "set_mode",
    "freeze_bn_stats", "disable_observers", "MAX_BATCH", "uint8_activations", "calibrate_activation_ranges",
    "fix_activation_ranges", "bn_eps_to_qat_default", "float_weights",
]

MAX_BATCH = 1024
_BN_TRAINING_ARG = 5  # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, ...)
_BN_OPS = {
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit.default,
    torch.ops.aten.cudnn_batch_norm.default,
}


class DeployForward(nn.Module):
    """``images -> net.deploy_forward(images)`` (named raw outputs): the part of a network that is
    captured, quantized and exported (see ``models/contract.py``). The network sits under ``net``,
    so a captured graph's parameter names are ``net.<name>``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.deploy_forward(images)


def capture(module: nn.Module, example: torch.Tensor, train: bool, dynamic_hw: bool = False) -> GraphModule:
    """``torch.export.export`` with a dynamic batch dimension, in train or eval mode; returns the graph module.

    ``example`` should have a batch of at least 2 (a batch of 1 would be specialised).
    ``dynamic_hw``: height and width dynamic too (segmentation trains on crops and validates on
    whole images; a fully convolutional net runs at any size).
    """
    example = pad_batch(example)
    module.train(train)
    dims = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_hw:
        dims.update({2: Dim.DYNAMIC, 3: Dim.DYNAMIC})
    with torch.no_grad() if not train else torch.enable_grad():
        ep = torch.export.export(module, (example,), dynamic_shapes=(dims,), strict=False)
    return ep.module()


def prepare(net: nn.Module, example: torch.Tensor, qat: bool, scheme: str = "u8") -> GraphModule:
    """Capture ``net.deploy_forward`` (of a copy of ``net``: the original is left untouched) and insert
    fake-quant (``qat``) or observers (PTQ) of the quantization ``scheme`` (``quantizer.SCHEMES``).
    QAT graphs are left in train mode, PTQ graphs in eval mode."""
    net.check_format(None)  # a network that declares no export format cannot be quantized either
    core = DeployForward(copy.deepcopy(net).to(memory_format=torch.contiguous_format))
    moved = bn_eps_to_qat_default(core) if qat else 0
    gm = capture(core, example.contiguous(), train=qat, dynamic_hw=net.capture_dynamic_hw)
    quantizer = OrtQuantizer(is_qat=qat, scheme=scheme)
    with cached_patterns():  # torchao's conv + batch-norm patterns, exported once per process
        prepared = prepare_qat_pt2e(gm, quantizer) if qat else prepare_pt2e(gm, quantizer)
    prepared.meta["mnv2_training"] = qat
    prepared.meta["mnv2_bn_eps_moved"] = moved
    prepared.meta["mnv2_scheme"] = scheme
    set_mode(prepared, qat)
    return prepared


# torchao's QAT conv + batch-norm pattern (``qat_utils``) is written with this eps, whatever the layer's
_QAT_BN_EPS = 1e-5


@torch.no_grad()
def bn_eps_to_qat_default(module: nn.Module, eps: float = _QAT_BN_EPS) -> int:
    """Give every BatchNorm layer of ``module`` torchao's QAT eps (1e-5), moving the difference into its running
    variance: ``var + eps_layer = (var + eps_layer - 1e-5) + 1e-5``, so the network computes exactly the same in
    eval mode. Without it, ``prepare_qat_pt2e`` silently changes every layer with another eps (the SSDLite's
    1e-3, as torchvision's): the captured detector scored 0.54 mAP before any training against its float 0.66.
    Returns the number of layers changed."""
    changed = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.eps != eps and m.running_var is not None:
            m.running_var.add_(m.eps - eps).clamp_(min=0.0)
            m.eps = eps
            changed += 1
    return changed


@torch.no_grad()
def calibrate(prepared: GraphModule, batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` through a PTQ-prepared graph (eval mode) so its observers see the data; returns images seen."""
    set_mode(prepared, False)
    n = 0
    for images in batches:
        prepared(images)
        n += images.shape[0]
    return n


@torch.no_grad()
def calibrate_activation_ranges(prepared: GraphModule, batches: Iterable[torch.Tensor], bins: int = 2048) -> int:
    """Start a QAT graph from PTQ's activation ranges, and keep them: every per-tensor (activation)
    fake-quant gets the scale and zero point a ``HistogramObserver`` (PTQ's observer: it clips rare
    outliers) computes from ``batches`` seen by the float network (fake quantization off, eval mode), and
    its observer is switched off, so that training adapts the weights to these ranges (the calibrate,
    then fine-tune with fixed ranges recipe of TensorRT's QAT toolkit). Weight fake-quants keep observing.
    Returns the number of activation fake-quants set."""
    from torchao.quantization.pt2e import HistogramObserver

    fqs = _activation_fake_quants(prepared)
    if not fqs:
        return 0
    observers, hooks = [], []
    for fq in fqs:
        obs = HistogramObserver(bins=bins, dtype=fq.dtype, qscheme=fq.qscheme, quant_min=fq.quant_min,
                                quant_max=fq.quant_max, eps=float(fq.activation_post_process.eps))
        observers.append(obs)
        hooks.append(fq.register_forward_pre_hook(lambda _m, args, obs=obs: obs(args[0].detach().float())))
        fq.disable_fake_quant()
        fq.disable_observer()
    was_training = bool(getattr(prepared, "training", True))
    try:
        calibrate(prepared, batches)
    finally:
        for h in hooks:
            h.remove()
        set_mode(prepared, was_training)
    for fq, obs in zip(fqs, observers):
        # the fused fake-quant op recomputes its scale from the observer's min/max at every call, so PTQ's
        # (clipped) range goes there, as the min/max whose qparams are the histogram's
        scale, zero_point = (float(v) for v in obs.calculate_qparams())
        if fq.qscheme == torch.per_tensor_symmetric:
            hi = scale * (fq.quant_max - fq.quant_min) / 2
            lo = -hi
        else:
            lo, hi = (fq.quant_min - zero_point) * scale, (fq.quant_max - zero_point) * scale
        ob = fq.activation_post_process
        probe = torch.zeros(1, device=fq.scale.device)
        for _ in range(2):  # the fused op's qparams formula differs slightly from the observer's: correct once
            ob.min_val.resize_(()).fill_(lo)
            ob.max_val.resize_(()).fill_(hi)
            fq.enable_fake_quant()
            fq(probe)  # observer off: writes the op's scale / zero point for this min/max
            lo, hi = lo * scale / float(fq.scale), hi * scale / float(fq.scale)
    return fix_activation_ranges(prepared)


def _activation_fake_quants(prepared: GraphModule) -> list[nn.Module]:
    return [m for m in dict.fromkeys(prepared.modules()) if hasattr(m, "fake_quant_enabled")
            and getattr(m, "qscheme", None) in (torch.per_tensor_affine, torch.per_tensor_symmetric)]


def fix_activation_ranges(prepared: GraphModule) -> int:
    """Switch off the observers of every activation fake-quant for good (``QuantNet.train`` leaves them
    off): their scales and zero points stay as they are (calibrated, or restored from a checkpoint)."""
    fqs = _activation_fake_quants(prepared)
    for fq in fqs:
        fq.disable_observer()
        fq.mnv2_range_fixed = True
    return len(fqs)


def convert(prepared: GraphModule) -> GraphModule:
    """Observers off, eval mode, ``convert_pt2e``: a graph of Q/DQ ops around float ops, as ONNX wants.

    Works on a copy; the prepared graph (and its training state) is unchanged."""
    gm = copy.deepcopy(prepared)
    set_mode(gm, False)
    gm.apply(disable_observer)
    with cached_patterns():  # the 108 pattern graphs of the conv + batch-norm folding, exported once per process
        converted = convert_pt2e(gm)
        move_exported_model_to_eval(converted)
    return converted


_PER_TENSOR_QDQ = ("quantize_per_tensor", "dequantize_per_tensor")


def uint8_activations(converted: GraphModule) -> GraphModule:
    """A copy of a converted graph whose int8 activation Q/DQ pairs are uint8 ones with the zero point
    shifted by 128: the same grid (``q_u8 = q_s8 + 128``), so exactly the same numbers, in the encoding
    ONNX Runtime's x86 U8S8 kernels run (an ``s8``/``s8sym`` file runs several times slower there).
    Weights (per-channel, int8) are unchanged. A ``u8`` graph comes back as an unchanged copy."""
    gm = copy.deepcopy(converted)
    changed = False
    for n in gm.graph.nodes:
        name = str(n.target).split(".")
        if (n.op == "call_function" and len(name) > 2 and name[-2] in _PER_TENSOR_QDQ and len(n.args) > 5
                and n.args[5] == torch.int8):
            x, scale, zp, qmin, qmax, _ = n.args[:6]
            n.args = (x, scale, int(zp) + 128, int(qmin) + 128, int(qmax) + 128, torch.uint8, *n.args[6:])
            changed = True
    if changed:
        gm.recompile()
    gm.meta["mnv2_scheme"] = "u8"
    return gm


def float_weights(converted: GraphModule) -> GraphModule:
    """A copy of a converted graph whose int8 weight constants are float constants quantized in the graph
    (``dequantize(quantize(w))`` with ``w = (q - zp) * scale``): ``convert_pt2e(fold_quantize=False)``'s form, which
    converters that read Q/DQ pairs as the quantization of a float tensor (LiteRT's) take. ``quantize(w)`` gives back
    ``q`` exactly (``|q| <= 127``), so the numbers are the same."""
    gm = copy.deepcopy(converted)
    changed = False
    for n in list(gm.graph.nodes):
        name = str(n.target).split(".")
        if not (n.op == "call_function" and len(name) > 2 and name[-2] in ("dequantize_per_channel", "dequantize_per_tensor")
                and isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "get_attr"):
            continue
        qweight = getattr(gm, n.args[0].target)
        if not isinstance(qweight, torch.Tensor) or qweight.dtype not in (torch.int8, torch.uint8):
            continue
        per_channel = name[-2] == "dequantize_per_channel"
        args = [a if not isinstance(a, torch.fx.Node) else getattr(gm, a.target) if a.op == "get_attr" else None
                for a in n.args[1:3]]
        if any(a is None for a in args):
            continue
        scale, zp = (torch.as_tensor(a) for a in args)
        if per_channel:
            axis = n.args[3]
            shape = [1] * qweight.dim()
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        weight = ((qweight.to(torch.float32) - zp.to(torch.float32)) * scale.to(torch.float32)).contiguous()
        attr = f"{n.args[0].target}_float"
        gm.register_buffer(attr, weight)
        with gm.graph.inserting_before(n):
            float_node = gm.graph.get_attr(attr)
            op = (torch.ops.quantized_decomposed.quantize_per_channel.default if per_channel
                  else torch.ops.quantized_decomposed.quantize_per_tensor.default)
            quant = gm.graph.call_function(op, (float_node, *n.args[1:]), dict(n.kwargs))
        n.args = (quant, *n.args[1:])
        changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return gm


def set_mode(gm: GraphModule, training: bool) -> GraphModule:
    """The torchao way of ``gm.train(training)``; frozen batch-norm statistics stay frozen."""
    with cached_patterns():  # its dropout and batch-norm patterns, exported once per process
        if training:
            move_exported_model_to_train(gm)
            if gm.meta.get("mnv2_bn_frozen"):
                _set_bn_training(gm, False)
        else:
            move_exported_model_to_eval(gm)
    object.__setattr__(gm, "training", training)
    return gm


def freeze_bn_stats(gm: GraphModule) -> None:
    """Stop updating batch-norm running statistics (the QAT recipe's late-training step)."""
    gm.meta["mnv2_bn_frozen"] = True
    if getattr(gm, "training", True):
        _set_bn_training(gm, False)


def disable_observers(gm: GraphModule) -> None:
    """Freeze the quantization parameters (scales, zero points) where they are."""
    gm.apply(disable_observer)
    gm.meta["mnv2_observers_frozen"] = True


def _enable_observer_unless_fixed(m: nn.Module) -> None:
    """``enable_observer``, except for activation fake-quants whose range ``calibrate_activation_ranges`` fixed."""
    if getattr(m, "mnv2_range_fixed", False):
        return
    enable_observer(m)


def _set_bn_training(gm: GraphModule, training: bool) -> None:
    changed = False
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in _BN_OPS and len(n.args) > _BN_TRAINING_ARG:
            if n.args[_BN_TRAINING_ARG] != training:
                args = list(n.args)
                args[_BN_TRAINING_ARG] = training
                n.args = tuple(args)
                changed = True
    if changed:
        gm.recompile()


class QuantNet(nn.Module):
    """A prepared (fake-quant) or converted graph behind the interface of the network it came from.

    ``graph`` computes the network's ``deploy_forward``; ``float_net`` lends everything after it
    (``train_outputs``, ``postprocess``, ``export_outputs``, anchors, ...: the non-learned part of
    the model contract) and is not a registered submodule, so ``state_dict``, ``parameters`` and
    the optimizer see the graph only. ``train()`` / ``eval()`` are safe.
    """

    def __init__(self, graph: GraphModule, float_net: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        object.__setattr__(self, "float_net", float_net)
        self.training = bool(getattr(graph, "training", graph.meta.get("mnv2_training", False)))

    def train(self, mode: bool = True):
        set_mode(self.graph, mode)
        # observers learn from training batches only (not from validation), and never once frozen
        if mode and not self.graph.meta.get("mnv2_observers_frozen"):
            self.graph.apply(_enable_observer_unless_fixed)
        elif not mode:
            self.graph.apply(disable_observer)
        self.training = mode
        return self

    def deploy_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.graph(images)

    def forward(self, images: torch.Tensor, targets: Any = None):
        raw = self.graph(images)
        if self.training:
            return self.float_net.train_outputs(raw, images, targets)
        return self.float_net.postprocess(raw, images.shape[-2:])

    def __getattr__(self, name: str):
        # parameters, buffers and submodules first (nn.Module), then the float network's
        # declarations and non-learned helpers (task, num_classes, postprocess, anchors, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            float_net = self.__dict__.get("float_net")
            if float_net is None or name.startswith("_"):
                raise
            return getattr(float_net, name)
