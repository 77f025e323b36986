"""Deployment targets (issue 13): schemes per target, the TensorRT-ready file, OpenVINO IR and ExecuTorch files
against PyTorch, and a QAT run that writes and evaluates every target in its runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mnv2_tasks.models import MobileNetV2
from mnv2_tasks.quant.deploy import DeployModule, export_deploy
from mnv2_tasks.quant.runners import open_model
from mnv2_tasks.quant.parity import compare_outputs
from mnv2_tasks.quant.pt2e import calibrate, convert, prepare
from mnv2_tasks.quant.targets import TargetError, check_targets, scheme_for, write_targets
from mnv2_tasks.quant.tensorrt_target import check_tensorrt_qdq

from test_quant import data_bn, real_images
from conftest import TINY_BLOCKS


def _ptq(net, images, scheme):
    prepared = prepare(net, images[:2], qat=False, scheme=scheme)
    calibrate(prepared, [images])
    return convert(prepared)


@pytest.fixture(scope="module")
def classifier(shapes_root):
    torch.manual_seed(0)
    images = real_images(shapes_root, 6, 48)
    return data_bn(MobileNetV2(num_classes=4, width_mult=0.35, dropout=0.0, inverted_residual_setting=TINY_BLOCKS), images), images


def test_targets_choose_one_scheme_every_target_takes():
    assert check_targets("all") == ["onnx", "openvino", "executorch", "tensorrt", "ncnn", "coreml", "litert"]
    assert check_targets(["tensorrt", "onnx"]) == ["onnx", "tensorrt"]  # table order
    assert scheme_for(["onnx"]) == "u8" and scheme_for(["onnx", "openvino"]) == "u8"
    assert scheme_for(["onnx", "executorch"]) == "s8"
    assert scheme_for(["all"]) == "s8sym" and scheme_for(["tensorrt"]) == "s8sym"
    assert scheme_for(["onnx"], "s8sym") == "s8sym"
    with pytest.raises(TargetError, match="does not run on"):
        scheme_for(["executorch"], "u8")
    with pytest.raises(TargetError, match="choose from"):
        check_targets(["tflite"])


def _zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return [consts[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]


@pytest.mark.slow
def test_tensorrt_file_has_int8_zero_point_0_and_matches_pytorch(classifier, tmp_path):
    net, images = classifier
    q = _ptq(net, images, "s8sym")
    trt = write_targets(["tensorrt"], q, net, images[:2], tmp_path, "int8")["tensorrt"]
    assert trt.name == "model.int8.trt.onnx"
    zps = _zero_points(trt)
    assert len(zps) >= 30 and all(z.dtype == np.int8 and not z.any() for z in zps)  # every activation Q: int8, 0
    assert check_tensorrt_qdq(trt)["quantize"] == len(zps)
    rep = compare_outputs(DeployModule(q, net, "logits"), open_model(trt), images[:3])["logits"]
    assert rep["max_abs"] <= 0.25 * max(rep["scale"], 1e-3)
    # a u8 (ORT) file is refused, naming the fix
    u8 = export_deploy(_ptq(net, images, "u8"), net, images[:2], tmp_path / "u8.onnx")
    with pytest.raises(TargetError, match="s8sym"):
        check_tensorrt_qdq(u8)


def test_uint8_activations_are_the_same_grid(classifier):
    """zero point + 128 on uint8: exactly the numbers of the int8 graph, on every activation Q/DQ pair."""
    from mnv2_tasks.quant.pt2e import uint8_activations

    net, images = classifier
    q = _ptq(net, images, "s8")
    u = uint8_activations(q)
    torch.testing.assert_close(u(images)["logits"], q(images)["logits"], atol=0, rtol=0)
    dtypes = {n.args[5] for n in u.graph.nodes if n.op == "call_function" and "per_tensor" in str(n.target)}
    assert dtypes == {torch.uint8}


@pytest.mark.slow
def test_one_s8sym_graph_gives_the_ort_file_uint8_activations_with_the_same_numbers(classifier, tmp_path):
    """Trained once for TensorRT, the ONNX Runtime file still gets ORT's fast uint8 encoding: zero point + 128."""
    from mnv2_tasks.quant.pt2e import uint8_activations

    net, images = classifier
    q = _ptq(net, images, "s8sym")
    torch.testing.assert_close(uint8_activations(q)(images)["logits"], q(images)["logits"], atol=0, rtol=0)
    files = write_targets(["onnx", "tensorrt"], q, net, images[:2], tmp_path, "int8")
    zps = _zero_points(files["onnx"])
    assert zps and all(z.dtype == np.uint8 for z in zps)
    assert all(z.dtype == np.int8 for z in _zero_points(files["tensorrt"]))
    a, b = open_model(files["onnx"]).run(images[:3]), open_model(files["tensorrt"]).run(images[:3])
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


@pytest.fixture(scope="module")
def qat_all_graph(shapes_root, qat_all_targets):
    """The every-target QAT run's detector, its converted int8 graph (rebuilt from the checkpoint once for the tests
    that compare files against it) and real validation images."""
    from mnv2_tasks.quant.export import load_for_export

    images = real_images(shapes_root, 6, 64, "coco/val")
    _, det, prepared, _ = load_for_export(qat_all_targets.last, lambda: images[:2])
    return det, convert(prepared), images


@pytest.mark.slow
def test_openvino_int8_detector_compiles_static_and_dynamic_with_the_right_shapes(qat_all_targets, qat_all_graph, tmp_path):
    """The every-target run's int8 ONNX file (NMS in the graph) compiled by OpenVINO with a dynamic batch and at
    static batches 1 and 3: the shapes, and PyTorch's detection counts."""
    from mnv2_tasks.quant.openvino_runtime import OvModel, write_openvino

    det, q, images = qat_all_graph
    onnx_path = qat_all_targets.dir / "model.int8.onnx"
    per_img = det.postprocess_cfg.detections_per_img
    for static in (None, 1, 3):
        xml = write_openvino(onnx_path, tmp_path / f"det_{static}.xml", static_batch=static)
        model = OvModel(xml)
        assert model.task == "detection" and model.format == "nms"
        n = static or 2
        out = model.run(images[:n])
        assert out["boxes"].shape == (n, per_img, 4) and out["scores"].shape == (n, per_img)
        assert out["num_detections"].shape == (n,)
        ref = DeployModule(q, det, "nms").eval()(images[:n])
        np.testing.assert_array_equal(out["num_detections"], ref[3].numpy())
    # the decoded outputs (before NMS, whose ties may break either way) equal the ORT file's
    dec = export_deploy(q, det, images[:2], tmp_path / "dec.int8.onnx", fmt="decoded")
    ov, ort = OvModel(write_openvino(dec, tmp_path / "dec.xml")).run(images[:3]), open_model(dec).run(images[:3])
    assert np.abs(ov["scores"] - ort["scores"]).max() < 0.02
    assert np.abs(ov["boxes"] - ort["boxes"]).max() < 1.0  # pixels, at 64 px
    with pytest.raises(FileNotFoundError, match=r"\.bin"):
        xml = tmp_path / "lonely.xml"
        xml.write_text((tmp_path / "dec.xml").read_text())
        OvModel(xml)


def test_float_weights_give_the_same_numbers_from_float_constants(classifier):
    """LiteRT's converter reads a weight as a float constant quantized in the graph: the rewrite keeps every number."""
    from mnv2_tasks.quant.pt2e import float_weights

    net, images = classifier
    for scheme in ("s8", "s8sym"):
        q = _ptq(net, images, scheme)
        f = float_weights(q)
        torch.testing.assert_close(f(images)["logits"], q(images)["logits"], atol=0, rtol=0)
        dq = [n for n in f.graph.nodes if n.op == "call_function" and "dequantize_per_channel" in str(n.target)]
        assert dq and all(n.args[0].op == "call_function" and "quantize_per_channel" in str(n.args[0].target) for n in dq)
        assert all(getattr(f, n.args[0].args[0].target).dtype == torch.float32 for n in dq)
        assert any(getattr(q, n.target).dtype == torch.int8 for n in q.graph.nodes if n.op == "get_attr")  # q unchanged


def test_open_model_refuses_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx, \.xml, \.pte.*\.tflite"):
        open_model(tmp_path / "model.pb")


@pytest.mark.slow
def test_executorch_files_match_pytorch(tiny_detector, qat_all_targets, qat_all_graph):
    """The every-target QAT run's fp32 and int8 (s8sym) detector .pte files, in ExecuTorch's NMS-free format, against
    PyTorch at batch 1 and 3 (dynamic batch): the float network, and the converted int8 graph."""
    from mnv2_tasks import load_model

    det, qd, images = qat_all_graph
    float_net = load_model(tiny_detector.last).to(memory_format=torch.contiguous_format)  # the fp32 files' network
    fp32, int8 = qat_all_targets.dir / "model.fp32.pte", qat_all_targets.dir / "model.int8.pte"
    m32, m8 = open_model(fp32), open_model(int8)
    assert m8.task == "detection" and m8.meta["precision"] == "int8" and m32.meta["precision"] == "fp32"
    assert m8.format == m32.format == "decoded" and m8.output_names == ["boxes", "scores"]
    for n in (1, 3):  # dynamic batch
        rep = compare_outputs(DeployModule(None, float_net, "decoded"), m32, images[:n])
        assert rep["scores"]["max_abs"] < 1e-4 and rep["boxes"]["max_abs"] < 1e-3, rep
        rep = compare_outputs(DeployModule(qd, det, "decoded"), m8, images[:n])
        # decoded in float, outside int8: XNNPACK's requantization may round a logit one step apart from PyTorch's
        assert rep["scores"]["max_abs"] < 0.01 and rep["boxes"]["max_abs"] < 0.5, rep
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    got, ref = m8(images[:3]), det.postprocess(qd(images[:3]), (64, 64))
    assert [len(g["boxes"]) for g in got] == [len(r["boxes"]) for r in ref]


def _matched(got: list[dict], ref: list[dict], iou: float = 0.99, score_tol: float = 1e-4) -> float:
    """The fraction of ``got``'s detections that ``ref`` has too (same label, IoU > ``iou``, score within
    ``score_tol``), over all images: robust to the near-tied scores of a barely trained detector, whose
    order (and so which box NMS keeps, and the mAP) any float difference can change."""
    from torchvision.ops import box_iou

    hits = total = 0
    for g, r in zip(got, ref):
        gb, rb = torch.as_tensor(g["boxes"]).float(), torch.as_tensor(r["boxes"]).float()
        total += len(gb)
        if len(gb) and len(rb):
            same = ((torch.as_tensor(g["labels"])[:, None] == torch.as_tensor(r["labels"])[None]) & (box_iou(gb, rb) > iou)
                    & ((torch.as_tensor(g["scores"])[:, None] - torch.as_tensor(r["scores"])[None]).abs() < score_tol))
            hits += int(same.any(1).sum())
    return hits / max(total, 1)


@pytest.mark.slow
def test_qat_with_every_target_writes_and_evaluates_each_in_its_runtime(qat_all_targets, tiny_detector, make_cfg, shapes_root,
                                                                       tmp_path):
    from mnv2_tasks import load_model
    from mnv2_tasks.evaluate import evaluate
    from mnv2_tasks.predict import Predictor

    from conftest import TINY_DET as DET

    out, saved = qat_all_targets.dir, qat_all_targets.metrics
    assert saved["quant_scheme"] == "s8sym"
    for name in ("model.fp32.onnx", "model.int8.onnx", "model.fp32.xml", "model.int8.xml", "model.int8.bin",
                 "model.fp32.pte", "model.int8.pte", "model.int8.trt.onnx", "model.fp32.ncnn.param", "model.fp32.ncnn.bin",
                 "model.fp32.tflite", "model.int8.tflite"):
        assert (out / name).is_file(), name
    # the float files are the float network (the QAT run's starting point) in every runtime: the same detections.
    # Compared detection by detection, not by mAP: this two-epoch detector's scores are near-ties (0.2 +- 0.005), so
    # any float difference reorders them and moves its near-zero mAP (CI once saw 0.0027 against 0.0064)
    net = load_model(tiny_detector.last)
    images = real_images(shapes_root, 6, 64, "coco/val")
    with torch.no_grad():
        ref = net(images.contiguous(memory_format=torch.channels_last))
    assert sum(len(r["boxes"]) for r in ref) > 0
    for key in ("onnx", "openvino", "executorch", "ncnn", "litert"):
        assert _matched(open_model(out / saved[f"{key}_fp32_file"])(images), ref) >= 0.9, key
        assert saved[f"{key}_fp32_mAP"] == pytest.approx(saved["torch_fp32_mAP"], abs=0.02), key
    for key in ("onnx", "openvino", "executorch", "tensorrt", "litert"):
        assert 0.0 <= saved[f"{key}_int8_mAP"] <= 1.0
        assert saved[f"{key}_int8_mAP"] == pytest.approx(saved["torch_int8_mAP"], abs=0.02), key
    check_tensorrt_qdq(out / "model.int8.trt.onnx")
    # tools/eval.py scores an .xml and a .pte like the run did
    for name, key in (("model.int8.xml", "openvino_int8_mAP"), ("model.int8.pte", "executorch_int8_mAP"),
                      ("model.int8.tflite", "litert_int8_mAP")):
        ecfg = make_cfg(*DET, f"ckpt={out / name}", config_name="eval")  # the run's preset: one image per batch
        ecfg.paths.output_dir = str(tmp_path / f"eval_{name}")
        assert evaluate(ecfg)["mAP"] == pytest.approx(saved[key], abs=1e-6)
    # the Predictor takes them too, answering like the .onnx
    frame = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    a, b = Predictor(out / "model.int8.pte")(frame), Predictor(out / "model.int8.onnx")(frame)
    assert a["boxes"].shape[1] == 4 and len(a["scores"]) > 0 and len(b["scores"]) > 0


def test_a_new_runtime_is_its_module_plus_one_record(classifier, tmp_path, monkeypatch, capsys):
    """A toy target (tests/toy_target.py) registered as one record: every place that lists, writes, opens,
    evaluates or benchmarks targets takes it, with nothing else edited."""
    from mnv2_tasks.benchmarks.deploy import _variants
    from mnv2_tasks.cli import export_parser
    from mnv2_tasks.predict import Predictor, model_suffixes
    from mnv2_tasks.quant.model_file import file_bytes
    from mnv2_tasks.quant.targets import TARGETS, target_of_file
    from toy_target import TOY, ToyModel

    monkeypatch.setitem(TARGETS, "toy", TOY)
    net, images = classifier
    assert check_targets("all")[-1] == "toy" and scheme_for(["onnx", "toy"]) == "u8"
    assert ".toy.pt2" in model_suffixes() and target_of_file(tmp_path / "m.int8.toy.pt2") is TOY
    assert ("Toy (torch.export)", "int8", "toy") in _variants(["toy"])
    assert "toy" in export_parser().format_help()
    q = _ptq(net, images, scheme_for(["onnx", "toy"]))
    for precision, core in (("fp32", None), ("int8", q)):
        files = write_targets(["onnx", "toy"], core, net, images[:2], tmp_path, precision, {"mnv2_input": "{}"})
        assert files["toy"].name == f"model.{precision}.toy.pt2" and file_bytes(files["toy"]) > 0
        model = open_model(files["toy"])
        assert isinstance(model, ToyModel) and model.target is TOY and model.task == "classification"
        rep = compare_outputs(DeployModule(core, net, "logits"), model, images[:3])["logits"]
        # fp32: the same numbers; int8: at most a logit one output step apart, where a value sits on a rounding edge
        tol = 1e-4 * max(rep["scale"], 1.0) if core is None else 2 * rep["scale"] / 127
        assert rep["max_abs"] <= tol, rep
        # the same numbers as the ONNX Runtime file of the same core (fp32 exactly enough; int8 on the same grid)
        ort = open_model(files["onnx"]).run(images[:3])["logits"]
        np.testing.assert_allclose(model.run(images[:3])["logits"], ort, atol=1e-3 if core is None else 0.05)
    # the Predictor opens it by its suffix
    frame = (np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)
    assert Predictor(files["toy"])(frame)["probs"].shape == (4,)
    # an unknown suffix still names every target's
    with pytest.raises(ValueError, match=r"\.toy\.pt2"):
        open_model(tmp_path / "m.pb")


def test_an_export_that_fails_leaves_the_previous_files_and_no_partial_ones(classifier, tmp_path, monkeypatch):
    """Every target's file is written under a temporary name and renamed into place once all are written."""
    import dataclasses

    from mnv2_tasks.quant.targets import TARGETS
    from toy_target import TOY

    net, images = classifier
    first = write_targets(["onnx"], None, net, images[:2], tmp_path, "fp32")["onnx"]
    before = first.read_bytes()

    def broken(job, path):
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(TARGETS, "toy", dataclasses.replace(TOY, writer=broken))
    with pytest.raises(OSError, match="No space left"):
        write_targets(["onnx", "toy"], None, net, images[:2], tmp_path, "fp32", {"run": "second"})
    assert first.read_bytes() == before  # the previous file, not the second export's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp32.onnx"]  # no temporary or partial file left


@pytest.mark.slow
def test_int8_onnx_predictions_score_the_runs_onnx_int8_map(qat_all_targets, shapes_root, tmp_path):
    # the QAT run's int8 files are evaluated one image per batch, as the predictor runs them (test_predict.py)
    metrics = qat_all_targets.metrics
    onnx = qat_all_targets.dir / "model.int8.onnx"
    from mnv2_tasks.predict_cli import main as predict_main

    from test_predict import _score_predictions

    assert predict_main([str(onnx), str(shapes_root / "coco" / "val"), "--out", str(tmp_path / "p"), "--json"]) == 0
    ann = shapes_root / "coco" / "annotations" / "instances_val.json"
    assert _score_predictions(tmp_path / "p" / "predictions.json", ann) == pytest.approx(metrics["onnx_int8_mAP"], abs=1e-4)
