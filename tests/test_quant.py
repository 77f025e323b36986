"""PT2E quantization of the package's networks: annotation, QAT graph behind the network's interface, QAT runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnv2_tasks.models import MobileNetV2
from mnv2_tasks.quant.pt2e import QuantNet, calibrate, convert, freeze_bn_stats, prepare

from conftest import TINY_BLOCKS

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def real_images(root: Path, n: int, size: int, sub: str = "imagefolder/val") -> torch.Tensor:
    """``n`` embedded images, resized to ``size`` and normalized: (n, 3, size, size)."""
    files = sorted((root / sub).rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    ims = [np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files]
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD


def data_bn(net: torch.nn.Module, images: torch.Tensor, steps: int = 4) -> torch.nn.Module:
    """Re-estimate BatchNorm statistics on real images, so that the net's output depends on its input."""
    from mnv2_tasks.models.contract import warm_batchnorm

    return warm_batchnorm(net, [images], passes=steps)


@pytest.fixture(scope="module")
def bn_classifier(shapes_root):
    torch.manual_seed(0)
    images = real_images(shapes_root, 8, 48)
    return data_bn(MobileNetV2(num_classes=4, width_mult=0.35, dropout=0.0, inverted_residual_setting=TINY_BLOCKS), images), images


def test_quantizer_puts_every_conv_and_residual_add_in_int8(bn_classifier):
    net, images = bn_classifier
    prepared = prepare(net, images[:2], qat=False)
    calibrate(prepared, [images])
    q = convert(prepared)
    ops = Counter(str(n.target) for n in q.graph.nodes if n.op == "call_function")
    n_conv = ops["aten.conv2d.default"]
    assert n_conv == sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())  # every conv of the network
    n_skip = sum(bool(getattr(m, "has_skip", False)) for m in net.modules())
    # weights per channel (one dequantize_per_channel each conv + the classifier), activations per tensor
    assert ops["quantized_decomposed.dequantize_per_channel.default"] == n_conv + 1
    # every residual add has quantized inputs and output, and is not fused into the conv before it
    adds = [n for n in q.graph.nodes if n.op == "call_function" and str(n.target) == "aten.add.Tensor"]
    assert len(adds) == n_skip > 0
    for add in adds:
        assert all("dequantize" in str(a.target) for a in add.args[:2])
        assert any("quantize_per_tensor" in str(u.target) for u in add.users)
    # the converted graph follows its input and stays close to the float network
    with torch.no_grad():
        ref, got = net(images), q(images)["logits"]
    assert (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.75
    assert (ref - got).abs().max() < 0.25 * ref.abs().max()


@pytest.mark.slow  # ~20 s: keeps `make test` near 3 minutes; CI runs it
def test_quantnet_trains_switches_modes_and_saves_graph_state(bn_classifier):
    net, images = bn_classifier
    qn = QuantNet(prepare(net, images[:2], qat=True), net)
    assert qn.training and qn.num_classes == 4
    # parameters are the graph's only (the float network is not a submodule)
    assert all(k.startswith("graph.") for k in qn.state_dict())
    opt = torch.optim.SGD(qn.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(qn(images), torch.arange(8) % 4)
    loss.backward()
    opt.step()
    qn.eval()  # Lightning calls this recursively: must not raise, must switch BN to running stats
    with torch.no_grad():
        a, b = qn(images[:2]), qn(images[:2])
    torch.testing.assert_close(a, b)
    freeze_bn_stats(qn.graph)
    qn.train()
    bns = [n for n in qn.graph.graph.nodes if "batch_norm" in str(n.target)]
    assert bns and all(n.args[5] is False for n in bns)  # frozen BN stays frozen in train mode
    # the state round-trips into a freshly prepared graph (what resuming a QAT checkpoint does)
    fresh = QuantNet(prepare(net, images[:2], qat=True), net)
    fresh.load_state_dict(qn.state_dict())
    fresh.eval()
    qn.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), qn(images))


def test_calibrated_activation_ranges_match_ptq_and_stay_fixed(bn_classifier):
    """act_ranges=calibrated: every activation fake-quant starts at PTQ's histogram range and keeps it through
    training steps (and QuantNet.train), while the weight fake-quants keep observing."""
    from mnv2_tasks.quant.pt2e import calibrate_activation_ranges

    net, images = bn_classifier
    ptq = prepare(net, images[:2], qat=False, scheme="s8sym")
    calibrate(ptq, [images])
    qat = prepare(net, images[:2], qat=True, scheme="s8sym")
    n = calibrate_activation_ranges(qat, [images])
    per_tensor = (torch.per_tensor_affine, torch.per_tensor_symmetric)
    act = [m for m in dict.fromkeys(qat.modules()) if hasattr(m, "fake_quant_enabled") and m.qscheme in per_tensor]
    weights = [m for m in dict.fromkeys(qat.modules()) if hasattr(m, "fake_quant_enabled") and m.qscheme not in per_tensor]
    assert n == len(act) > 0 and weights
    # PTQ's histogram ranges (within 5%: the QAT graph calibrates with its weights fake-quantized)
    ptq_obs = [m for m in dict.fromkeys(ptq.modules()) if type(m).__name__ == "HistogramObserver"]
    assert len(ptq_obs) == n
    assert sorted(float(m.scale) for m in act) == pytest.approx(sorted(float(o.calculate_qparams()[0]) for o in ptq_obs), rel=0.05)
    assert all(int(m.zero_point) == 0 for m in act)  # s8sym
    before = [m.scale.clone() for m in act]
    w_before = [m.scale.clone() for m in weights]
    qn = QuantNet(qat, net)
    qn.train()
    opt = torch.optim.SGD(qn.parameters(), lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(qn(images * 3), torch.arange(8) % 4).backward()  # wider inputs
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, [m.scale for m in act]))
    assert any(not torch.equal(a, b) for a, b in zip(w_before, [m.scale for m in weights]))


def test_qat_graph_is_the_float_network_whatever_the_batchnorm_eps(shapes_root):
    """torchao's QAT conv-bn pattern assumes BatchNorm eps 1e-5; the SSDLite uses 1e-3 (as torchvision's). With fake
    quantization off, the prepared QAT graph in eval mode must compute exactly what the float network does."""
    from mnv2_tasks.models import build_ssdlite
    from mnv2_tasks.quant.pt2e import set_mode

    torch.manual_seed(0)
    images = real_images(shapes_root, 4, 64, sub="coco/val")
    # an eps far from torchao's 1e-5, so that using the wrong one shows on an untrained net (in a trained one
    # it is the nearly constant channels, where eps is a large part of the variance)
    net = build_ssdlite(5, width_mult=0.35, size=64, bn_eps=0.1, inverted_residual_setting=TINY_BLOCKS)
    net.train()
    with torch.no_grad():  # running statistics of real images, some channels with a small variance
        for _ in range(4):
            net.deploy_forward(images)
    net.eval()
    with torch.no_grad():
        ref = net.deploy_forward(images)
    qat = prepare(net, images[:2], qat=True, scheme="s8sym")
    for m in qat.modules():
        if hasattr(m, "fake_quant_enabled"):
            m.disable_fake_quant()
            m.disable_observer()
    set_mode(qat, False)
    with torch.no_grad():
        got = qat(images)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-4, rtol=1e-4)
    assert {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}  # the float net is untouched


from conftest import TINY_CLS as QAT_TINY, TINY_SEG


@pytest.mark.slow
def test_qat_train_exports_evaluates_and_resumes(make_cfg, tmp_path, tiny_classifier):
    from mnv2_tasks.models import CheckpointError
    from mnv2_tasks.train import train

    fp32 = str(tiny_classifier.last)  # two epochs
    q = ["quant=qat", f"quant.from_ckpt={fp32}", "quant.freeze_bn_epoch=1", "quant.freeze_observer_epoch=1"]
    cfg_q = make_cfg(*QAT_TINY, "trainer.max_epochs=1", *q)
    cfg_q.paths.output_dir = str(tmp_path / "qat")
    metrics = train(cfg_q)
    saved = json.loads((tmp_path / "qat" / "metrics.json").read_text())
    for key in ("onnx_fp32_top1", "onnx_int8_top1", "torch_fp32_top1", "torch_int8_top1"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["onnx_int8_file"] == "model.int8.onnx" and (tmp_path / "qat" / "model.int8.onnx").is_file()
    assert (tmp_path / "qat" / "model.fp32.onnx").is_file()
    # the float ONNX file is the float network: same metric in ORT as in PyTorch
    assert saved["onnx_fp32_top1"] == pytest.approx(saved["torch_fp32_top1"], abs=1e-6)
    assert metrics["onnx_int8_top1"] == saved["onnx_int8_top1"]

    last = tmp_path / "qat" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["mnv2_tasks_quant"]["mode"] == "qat"
    # resume the QAT run from its checkpoint
    cfg_r = make_cfg(*QAT_TINY, "trainer.max_epochs=2", *q, "quant.export=false", f"ckpt_path={last}")
    cfg_r.paths.output_dir = str(tmp_path / "resumed")
    assert train(cfg_r)["epochs"] == 2
    # a float checkpoint as ckpt_path of a QAT run: a clear error naming the fix
    cfg_bad = make_cfg(*QAT_TINY, "trainer.max_epochs=2", *q, f"ckpt_path={fp32}")
    cfg_bad.paths.output_dir = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="quant.from_ckpt"):
        train(cfg_bad)
    # a QAT checkpoint without quant=qat: a clear error naming the file and the fix
    cfg_noq = make_cfg(*QAT_TINY, "trainer.max_epochs=2", f"ckpt_path={last}")
    cfg_noq.paths.output_dir = str(tmp_path / "noq")
    with pytest.raises(CheckpointError, match="quant=qat"):
        train(cfg_noq)


@pytest.mark.slow
def test_ptq_run_from_float_checkpoint(make_cfg, tmp_path, tiny_classifier):
    from mnv2_tasks.train import train

    fp32 = str(tiny_classifier.last)
    cfg_p = make_cfg(*QAT_TINY, "trainer.max_epochs=0", "quant=ptq", f"quant.from_ckpt={fp32}",
                     "quant.num_calibration_images=16")
    cfg_p.paths.output_dir = str(tmp_path / "ptq")
    metrics = train(cfg_p)
    assert metrics["ptq_calibration_images"] == 16
    assert metrics["onnx_fp32_top1"] == pytest.approx(metrics["torch_fp32_top1"], abs=1e-6)
    assert 0.0 <= metrics["onnx_int8_top1"] <= 1.0


@pytest.mark.slow
def test_segmentation_qat_trains_on_crops_and_evaluates_whole_images(make_cfg, tmp_path, tiny_segmenter):
    """The QAT graph of a segmenter has dynamic height and width: 64-px training crops, 96-px val images."""
    from mnv2_tasks.train import train

    from conftest import qat_overrides

    cfg_q = make_cfg(*TINY_SEG, *qat_overrides(tiny_segmenter.last))
    cfg_q.paths.output_dir = str(tmp_path / "qat")
    metrics = train(cfg_q)
    assert (tmp_path / "qat" / "model.int8.onnx").is_file()
    assert metrics["onnx_fp32_mIoU"] == pytest.approx(metrics["torch_fp32_mIoU"], abs=1e-6)
    assert 0.0 <= metrics["onnx_int8_mIoU"] <= 1.0
