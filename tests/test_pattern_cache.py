"""torchao's conv + batch-norm pattern graphs are exported once per process (quant/pattern_cache.py): the key tells
settings apart, a pattern it cannot key is exported every time, and a cached graph is the freshly exported one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchao.quantization.pt2e import qat_utils, utils

from mnv2_tasks.quant.pattern_cache import cached_patterns, clear, pattern_key

# torchao's example inputs of its conv2d + batch-norm patterns: x, conv weight and bias, bn weight, bias, mean, var
CONV2D_BN = (torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), *(torch.randn(1) for _ in range(5)))


def test_the_key_tells_pattern_settings_and_shapes_apart():
    x = CONV2D_BN
    a, b = qat_utils._get_conv_bn_pattern(F.conv2d), qat_utils._get_conv_bn_pattern(F.conv2d)
    assert a is not b and pattern_key(a, x, False, {}) == pattern_key(b, x, False, {})  # built twice: one key
    assert pattern_key(a, x, False, {}) != pattern_key(qat_utils._get_conv_bn_pattern(F.conv1d), x, False, {})
    assert pattern_key(a, x, False, {}) != pattern_key(a, x, True, {})
    bigger = tuple(torch.randn(*(2 * s for s in t.shape)) if t.dim() == 4 else t for t in x)
    assert pattern_key(a, x, False, {}) != pattern_key(a, bigger, False, {})
    w = torch.randn(3)
    assert pattern_key(lambda t: t * w, (torch.randn(3),), False, {}) is None  # a captured tensor: no key


def test_a_cached_pattern_is_the_exported_one_and_each_call_gets_its_own_copy(monkeypatch):
    x = CONV2D_BN
    original = utils._get_aten_graph_module_for_pattern
    fresh = original(qat_utils._get_conv_bn_pattern(F.conv2d), x, False)
    exports = []

    def counted(*args, **kwargs):
        exports.append(args[0])
        return original(*args, **kwargs)

    for mod in (utils, qat_utils):
        monkeypatch.setattr(mod, "_get_aten_graph_module_for_pattern", counted)
    clear()
    with cached_patterns():
        one = qat_utils._get_aten_graph_module_for_pattern(qat_utils._get_conv_bn_pattern(F.conv2d), x, False)
        two = utils._get_aten_graph_module_for_pattern(qat_utils._get_conv_bn_pattern(F.conv2d), x, False)
        other = utils._get_aten_graph_module_for_pattern(qat_utils._get_conv_bn_pattern(F.conv1d),
                                                         (torch.randn(1, 1, 3), torch.randn(1, 1, 1), *x[2:]), False)
    assert len(exports) == 2  # conv2d once, conv1d once
    assert one is not two and one.code == two.code == fresh.code and other.code != one.code
    assert qat_utils._get_aten_graph_module_for_pattern is counted  # restored on leaving
    args = [torch.randn_like(t) for t in x]
    torch.testing.assert_close(one(*args), fresh(*args))
