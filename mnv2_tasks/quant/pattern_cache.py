"""torchao's conv + batch-norm pattern graphs, made once per process instead of once per call.

``prepare_qat_pt2e`` and ``convert_pt2e`` find the conv + batch-norm layers of a QAT graph by matching pattern
graphs, and make every pattern afresh on every call with ``torch.export`` (``_get_aten_graph_module_for_pattern``):
``convert_pt2e`` of any graph with batch-norm nodes exports 108 small patterns (4 convolution kinds x 12 variants x
2), most of the conversion's time (``python -m mnv2_tasks.benchmarks.qat_convert``). The patterns depend only on the pattern
function, its settings and the example inputs' shapes, so ``cached_patterns()`` keeps each one and hands out a
deep copy (the rewriter must not share nodes between calls): the same graphs, each exported once per process.

A pattern whose settings cannot be told apart by value (a captured tensor, an unhashable setting) is exported
every time, as torchao does.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

import torch
from torch.fx import GraphModule

__all__ = ["cached_patterns", "pattern_key", "clear"]

_CACHE: dict[tuple, GraphModule] = {}


def clear() -> None:
    """Forget every kept pattern graph (the next conversion exports them again, as torchao alone does)."""
    _CACHE.clear()


def _value_key(v: Any):
    """What a pattern's graph depends on in an example input or setting: a tensor's shape, dtype and device (its
    values are inputs of the graph, not constants); anything else by value."""
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.dtype, v.device.type)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_value_key(x) for x in v))
    hash(v)  # TypeError for an unhashable setting: no key
    return v


def pattern_key(pattern: Callable, example_inputs: tuple, is_cuda: bool, kwargs: dict) -> tuple | None:
    """The key of a pattern graph: the pattern's code and captured settings, the example inputs' shapes, the
    keyword inputs and the device; ``None`` when one of them has no value key (a captured tensor, say)."""
    fn = getattr(pattern, "fn", pattern)  # torchao wraps a pattern function in a WrapperModule (``.fn``)
    if not callable(fn) or not hasattr(fn, "__code__") or (fn is not pattern and list(pattern.parameters())):
        return None
    try:
        cells = []
        for cell in fn.__closure__ or ():
            v = cell.cell_contents
            if isinstance(v, torch.Tensor):  # a constant of the graph: its values would matter
                return None
            cells.append(_value_key(v))
        return (type(pattern).__name__, fn.__code__, tuple(cells), _value_key(tuple(example_inputs)), bool(is_cuda),
                tuple(sorted((k, _value_key(v)) for k, v in kwargs.items())))
    except (TypeError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def cached_patterns() -> Iterator[None]:
    """Within the block, torchao's pattern graphs come from the process's cache (made on first use)."""
    from torchao.quantization.pt2e import qat_utils, utils

    original = utils._get_aten_graph_module_for_pattern

    def cached(pattern: Callable, example_inputs: tuple, is_cuda: bool = False, **kwargs) -> GraphModule:
        key = pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return original(pattern, example_inputs, is_cuda, **kwargs)
        if key not in _CACHE:
            _CACHE[key] = original(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(_CACHE[key])

    saved = {mod: mod._get_aten_graph_module_for_pattern for mod in (utils, qat_utils)}
    for mod in saved:
        mod._get_aten_graph_module_for_pattern = cached
    try:
        yield
    finally:
        for mod, fn in saved.items():
            mod._get_aten_graph_module_for_pattern = fn
