"""The NCNN target (pnnx + the ncnn wheel): fp32 files of a classifier and a detector, checked in NCNN against the
float network, scored by tools/eval.py in NCNN as in PyTorch, and refused for int8 with the reason."""

from __future__ import annotations

import pytest

from mnv2_tasks.evaluate import evaluate
from mnv2_tasks.quant.export import export_checkpoint
from mnv2_tasks.quant.runners import open_model
from mnv2_tasks.quant.targets import scheme_for


@pytest.mark.slow  # an export, two evaluations, and the shared tiny classifier in this file's worker
def test_a_classifier_runs_in_ncnn_as_in_pytorch(tiny_classifier, shapes_root, tmp_path, make_cfg):
    data = f"paths.data_dir={shapes_root}"
    rep = export_checkpoint(str(tiny_classifier.last), "fp32", out_dir=tmp_path, formats=["ncnn"], check_images=3,
                            overrides=[data])
    files = rep["files"]
    assert list(files) == ["ncnn_fp32"]
    param = tmp_path / "last.fp32.ncnn.param"
    assert param.is_file() and param.with_suffix(".bin").is_file() and param.with_suffix(".json").is_file()
    for check in files["ncnn_fp32"]["checks"].values():  # batches 1 and 3 against the float network
        assert check["logits"]["max_abs"] < 1e-4 and check["logits"]["argmax_agree"] == 1.0, check
    ev = make_cfg("debug=tiny_classification", f"ckpt={param}", config_name="eval")
    ev_torch = make_cfg("debug=tiny_classification", f"ckpt={tiny_classifier.last}", config_name="eval")
    a, b = evaluate(ev), evaluate(ev_torch)
    assert a["num_samples"] == b["num_samples"] and a["top1"] == pytest.approx(b["top1"], abs=1e-9)


@pytest.mark.slow  # an export and two evaluations of the tiny detector
def test_a_detector_runs_in_ncnn_with_the_selection_after_the_graph(tiny_detector, shapes_root, tmp_path, make_cfg):
    data = f"paths.data_dir={shapes_root}"
    export_checkpoint(str(tiny_detector.last), "fp32", out_dir=tmp_path, formats=["ncnn"], check_images=2, overrides=[data])
    model = open_model(tmp_path / "last.fp32.ncnn.param")
    assert model.format == "decoded" and model.runtime == "ncnn"  # NMS-free: select_detections runs after NCNN
    ev = make_cfg("debug=tiny_detection", f"ckpt={tmp_path / 'last.fp32.ncnn.param'}", config_name="eval")
    ev_torch = make_cfg("debug=tiny_detection", f"ckpt={tiny_detector.last}", config_name="eval")
    a, b = evaluate(ev), evaluate(ev_torch)
    assert a["num_images"] == b["num_images"] and a["mAP"] == pytest.approx(b["mAP"], abs=2e-3)


def test_ncnn_has_no_int8_file_and_takes_no_part_in_the_scheme():
    assert scheme_for(["ncnn"]) == "s8"  # nothing to quantize for it: any scheme
    assert scheme_for(["onnx", "ncnn"]) == scheme_for(["onnx"])
    assert scheme_for(["executorch", "ncnn"]) == "s8"
