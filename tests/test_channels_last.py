"""model.channels_last: NHWC weights and batches, the same numbers as the default memory format."""

from __future__ import annotations

import copy
from functools import partial

import torch

from mnv2_tasks.models.ssdlite import build_ssdlite
from mnv2_tasks.tasks.detection import DetectionModule


def test_channels_last_module_gives_the_same_outputs():
    torch.manual_seed(0)
    net = build_ssdlite(5, 0.35, 64, reduce_lowest_level=False)
    # train mode: BatchNorm uses the batch statistics, so the outputs depend on the input
    # (an untrained net in eval mode barely does, which would make any comparison pass)
    ref = copy.deepcopy(net).train()
    module = DetectionModule(net, partial(torch.optim.SGD, lr=0.1), channels_last=True).train()
    conv = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    images = torch.randn(2, 3, 64, 64)
    batch = module.prepare_batch({"image": images, "target": []})
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) and torch.equal(batch["image"], images)
    with torch.no_grad():
        ours = module.net.deploy_forward(batch["image"])
        theirs = ref.deploy_forward(images)
    assert set(ours) == set(theirs) == {"bbox_regression", "cls_logits"}
    for a, b in zip(ours.values(), theirs.values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)  # other conv kernels, same maths
        assert a.std() > 1e-3  # not a constant
    off = DetectionModule(copy.deepcopy(ref), partial(torch.optim.SGD, lr=0.1))
    assert off.prepare_batch({"image": images})["image"].is_contiguous()
