"""The Core ML target: fp32 and int8-weight .mlpackage files, checked by loading their spec back on Linux (Core ML
predicts on macOS only, which the runner says instead of failing obscurely)."""

from __future__ import annotations

import json
import sys

import pytest

from mnv2_tasks.quant.coreml_target import check_spec
from mnv2_tasks.quant.export import export_checkpoint
from mnv2_tasks.quant.model_file import file_bytes
from mnv2_tasks.quant.runners import open_model
from mnv2_tasks.quant.targets import scheme_for


@pytest.mark.slow  # two Core ML conversions (~10 s each) and the shared tiny classifier
def test_a_classifier_becomes_fp32_and_int8_weight_packages(tiny_classifier, shapes_root, tmp_path, capsys):
    rep = export_checkpoint(str(tiny_classifier.last), "both", out_dir=tmp_path, formats=["coreml"], check_images=2,
                            overrides=[f"paths.data_dir={shapes_root}"])
    assert set(rep["files"]) == {"coreml_fp32", "coreml_int8"}
    fp32, int8 = tmp_path / "last.fp32.mlpackage", tmp_path / "last.int8.mlpackage"
    assert fp32.is_dir() and int8.is_dir()
    assert file_bytes(int8) < 0.7 * file_bytes(fp32)  # weights stored in int8
    spec = check_spec(fp32, [1, 3, 48, 48], ["logits"])
    assert spec["metadata"]["task"] == "classification"
    record = json.loads(spec["metadata"]["mnv2_model"])
    assert record["input"]["image_size"] == [48, 48] and record["task"] == "classification"
    assert "does not run on this machine" in capsys.readouterr().out or sys.platform == "darwin"
    if sys.platform != "darwin":
        with pytest.raises(RuntimeError, match="Core ML runs models on macOS"):
            open_model(fp32)


def test_core_ml_takes_no_part_in_the_int8_scheme():
    assert scheme_for(["onnx", "coreml"]) == scheme_for(["onnx"])
    assert scheme_for(["executorch", "coreml", "ncnn"]) == "s8"
