"""ONNX export (dynamic batch, opset 20) of every task, ORT-vs-PyTorch parity, and bad input to the exporter."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from mnv2_tasks.models import MobileNetV2
from mnv2_tasks.quant.deploy import DeployModule, export_deploy
from mnv2_tasks.quant.onnx_export import OnnxFileError, check_onnx_file
from mnv2_tasks.quant.ort_runner import OrtModel, ort_session
from mnv2_tasks.quant.parity import compare_outputs
from mnv2_tasks.quant.pt2e import calibrate, convert, prepare

from test_quant import data_bn, real_images
from conftest import TINY_BLOCKS


@pytest.fixture(scope="module")
def classifier_files(shapes_root, tmp_path_factory):
    torch.manual_seed(0)
    images = real_images(shapes_root, 6, 48)
    net = data_bn(MobileNetV2(num_classes=4, width_mult=0.35, dropout=0.0, inverted_residual_setting=TINY_BLOCKS), images)
    prepared = prepare(net, images[:2], qat=False)
    calibrate(prepared, [images])
    q = convert(prepared)
    out = tmp_path_factory.mktemp("onnx")
    fp32 = export_deploy(None, net, images[:2], out / "c.fp32.onnx")
    int8 = export_deploy(q, net, images[:2], out / "c.int8.onnx")
    return net, q, images, fp32, int8


def test_classifier_fp32_export_matches_pytorch_at_batch_1_and_3(classifier_files):
    net, _, images, fp32, _ = classifier_files
    model = OrtModel(fp32)
    assert model.meta["task"] == "classification" and model.meta["mnv2_outputs"] == "logits" and model.meta["opset"] == "20"
    assert onnx.load(str(fp32)).opset_import[0].version == 20
    for n in (1, 3):
        with torch.no_grad():
            ref = net(images[:n])
        got = model(images[:n])
        assert got.shape == (n, 4)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_classifier_int8_export_matches_converted_model_and_runs_integer_kernels(classifier_files, tmp_path):
    net, q, images, _, int8 = classifier_files
    model = OrtModel(int8)
    for n in (1, 3):
        rep = compare_outputs(DeployModule(q, net, "logits"), model, images[:n])["logits"]
        assert rep["shape"] == [n, 4]
        assert rep["argmax_agree"] >= 2 / 3
        assert rep["max_abs"] <= 0.25 * max(rep["scale"], 1e-3)  # a few output quantization steps
    # ORT turns the QDQ graph into integer kernels: every conv, the residual adds and the classifier
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    n_skip = sum(bool(getattr(m, "has_skip", False)) for m in net.modules())
    assert ops["QLinearConv"] == n_conv and ops["Conv"] == 0
    assert ops["QLinearAdd"] == n_skip > 0
    assert int8.stat().st_size < 0.6 * classifier_files[3].stat().st_size


@pytest.mark.slow
def test_segmentation_export_logits_and_argmax(shapes_root, tmp_path):
    from mnv2_tasks.models.deeplabv3 import build_deeplabv3

    torch.manual_seed(0)
    images = real_images(shapes_root, 4, 64, sub="voc/JPEGImages")
    net = data_bn(build_deeplabv3(num_classes=5, width_mult=0.35, aux=True, inverted_residual_setting=TINY_BLOCKS), images)
    prepared = prepare(net, images[:2], qat=False)
    calibrate(prepared, [images])
    q = convert(prepared)
    net.eval()
    for core, precision in ((None, "fp32"), (q, "int8")):
        for outputs in ("logits", "argmax"):
            path = export_deploy(core, net, images[:2], tmp_path / f"s.{precision}.{outputs}.onnx", fmt=outputs)
            model = OrtModel(path)
            for n in (1, 3):
                rep = compare_outputs(DeployModule(core, net, outputs), model, images[:n])
                if outputs == "logits":
                    e = rep["logits"]
                    assert e["shape"] == [n, 5, 64, 64]
                    assert e["max_abs"] <= (1e-4 if precision == "fp32" else 0.25 * e["scale"])
                    # int8: an untrained DeepLab's class scores are near ties that integer rounding flips
                    # (about 25% of pixels), so only the score difference is checked; trained-model
                    # agreement is what onnx_int8_mIoU in a quant=qat run measures
                    if precision == "fp32":
                        assert e["argmax_agree"] == 1.0
                else:
                    assert rep["mask"]["shape"] == [n, 64, 64]
                    if precision == "fp32":
                        assert rep["mask"]["equal"] >= 0.999
            assert model(images[:2]).shape == (2, 5, 64, 64)  # what net(images) returns (argmax: one-hot)


@pytest.mark.slow
def test_detection_nms_in_graph_returns_pytorch_postprocessing_boxes(shapes_root, tmp_path):
    from mnv2_tasks.models.ssdlite import build_ssdlite

    torch.manual_seed(0)
    images = real_images(shapes_root, 4, 96, sub="coco/val")
    net = build_ssdlite(num_classes=5, width_mult=0.35, size=96, inverted_residual_setting=TINY_BLOCKS)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net.deploy_forward(images)
    net.eval().use_postprocess("eval", score_thresh=0.05)
    path = export_deploy(None, net, images[:2], tmp_path / "d.fp32.onnx", fmt="nms")
    model = OrtModel(path)
    for n in (1, 3):
        with torch.no_grad():
            ref = net(images[:n])  # the eager post-processing: a list of dicts
        got = model(images[:n])
        assert len(got) == n
        for r, g in zip(ref, got):
            assert len(g["boxes"]) == len(r["boxes"])
            _same_detections(g, r)
    # raw outputs for runtimes with their own NMS: decoded boxes and per-class scores
    raw = export_deploy(None, net, images[:2], tmp_path / "d.decoded.onnx", fmt="decoded")
    out = OrtModel(raw).run(images[:3])
    assert out["boxes"].shape[0] == 3 and out["boxes"].shape[2] == 4 and out["scores"].shape[2] == 4
    got = OrtModel(raw)(images[:3])  # NMS run on the ORT outputs with the settings stored in the file
    with torch.no_grad():
        ref = net(images[:3])
    for r, g in zip(ref, got):
        _same_detections(g, r)


def _same_detections(got: dict, ref: dict, box_tol: float = 1e-3, score_tol: float = 1e-4) -> None:
    """Every reference detection has its own counterpart (same label, box and score within tolerance). An untrained
    network's scores have near-ties whose order any float difference (thread count, kernel) swaps, so the order is not
    compared."""
    free = list(range(len(got["boxes"])))
    for box, score, label in zip(ref["boxes"], ref["scores"], ref["labels"]):
        j = next((j for j in free if int(got["labels"][j]) == int(label) and abs(float(got["scores"][j]) - float(score)) <= score_tol
                  and float((got["boxes"][j] - box).abs().max()) <= box_tol), None)
        assert j is not None, f"no counterpart for {label} {score:.5f} {box.tolist()}"
        free.remove(j)
    assert not free


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(OnnxFileError, match="model.onnx.*not a valid ONNX model.*tools/export.py"):
        OrtModel(bad)
    with pytest.raises(OnnxFileError, match="not found"):
        check_onnx_file(tmp_path / "missing.onnx")


def test_ort_session_uses_requested_threads(classifier_files):
    sess = ort_session(classifier_files[3], threads=1)
    assert sess.get_session_options().intra_op_num_threads == 1


@pytest.mark.slow
def test_exporter_refuses_wrong_task_width_and_onnx(tiny_classifier, shapes_root, tmp_path, capsys):
    """tools/export.py's export_checkpoint: a float checkpoint exported and checked; another task/width, or an .onnx, refused."""
    from mnv2_tasks.quant.export import export_checkpoint

    ckpt = str(tiny_classifier.last)
    data = f"paths.data_dir={shapes_root}"
    rep = export_checkpoint(ckpt, "int8", out_dir=tmp_path, check_images=3, calibration_images=8, overrides=[data])
    checks = rep["files"]["onnx_int8"]["checks"]
    assert set(checks) == {"batch 1", "batch 3"} and rep["int8_source"].startswith("ptq")
    assert "ONNX Runtime vs converted int8 graph" in capsys.readouterr().out
    from mnv2_tasks.models import CheckpointError

    with pytest.raises(CheckpointError, match="task 'classification'.*task=classification"):
        export_checkpoint(ckpt, task="segmentation", overrides=[data])
    with pytest.raises(CheckpointError, match="width_mult"):
        export_checkpoint(ckpt, overrides=["model.net.width_mult=0.5", data])
    with pytest.raises(CheckpointError, match="already an ONNX file"):
        export_checkpoint(tmp_path / "last.int8.onnx")


def test_predictor_benchmark_times_the_call_and_each_of_its_steps(classifier_files):
    import argparse
    import re

    from mnv2_tasks.benchmarks.predictor import run

    text = run(argparse.Namespace(model=str(classifier_files[4]), threads=1, rounds=2, repeats=3, warmup=1))
    rows = re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \|$", text, re.M)
    assert [r[0] for r in rows] == ["ONNX Runtime session.run (preprocessed tensor)",
                                    "Predictor(frame): preprocessing + model + mapping back",
                                    "alone: preprocessing (the eval pipeline)", "alone: reading the outputs back",
                                    "alone: mapping back to the frame", "Predictor(frame, track=True): + ByteTrack",
                                    "pipeline: decode the JPEG + Predictor + ByteTrack"]
    assert all(0 < float(p50) <= float(p99) for _, p50, p99 in rows)
    assert re.search(r"API overhead: -?[0-9.]+ ms = -?[0-9.]+% of the model's time; the Predictor's steps alone: [0-9.]+ ms", text)
    assert re.search(r"the pipeline \(decode \+ call \+ tracking\) is [0-9.]+ ms = [0-9.]+x the model call alone", text)


def test_an_export_check_of_two_empty_outputs_fails():
    """Two files that both find nothing agree whatever they compute: the check must say nothing was compared."""
    from mnv2_tasks.quant.parity import check_failures, compare_outputs

    class Empty(torch.nn.Module):
        def forward(self, x):
            n = x.shape[0]
            return torch.zeros(n, 5, 4), torch.zeros(n, 5), torch.zeros(n, 5, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)

    class File:
        output_names = ["boxes", "scores", "labels", "num_detections"]

        def __init__(self, found: int) -> None:
            self.found = found

        def run(self, images):
            outs = [o.numpy() for o in Empty()(images)]
            outs[3][:] = self.found
            return dict(zip(self.output_names, outs))

    images = torch.zeros(2, 3, 8, 8)
    assert compare_outputs(Empty(), File(0), images)["empty"]
    fails = check_failures("m.int8.onnx", {"batch 2": compare_outputs(Empty(), File(0), images)})
    assert len(fails) == 1 and "nothing was compared" in fails[0] and "m.int8.onnx" in fails[0]
    assert not check_failures("m.int8.onnx", {"batch 2": compare_outputs(Empty(), File(1), images)})
