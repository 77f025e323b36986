"""The LiteRT target (litert-torch + ai-edge-litert, XNNPACK): fp32 and int8 .tflite files of a classifier checked in
LiteRT against PyTorch and against the ONNX Runtime file of the same graph, scored by tools/eval.py, opened by the
Predictor; the files' record; a missing or broken file named. The detector's files are in the every-target QAT run
(test_deploy_targets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mnv2_tasks.evaluate import evaluate
from mnv2_tasks.quant.export import export_checkpoint
from mnv2_tasks.quant.runners import open_model
from mnv2_tasks.quant.targets import check_targets, scheme_for


@pytest.mark.slow  # four exports (two LiteRT conversions), three evaluations
def test_a_classifier_runs_in_litert_fp32_and_int8(tiny_classifier, shapes_root, tmp_path, make_cfg):
    from mnv2_tasks.predict import Predictor

    from test_quant import real_images

    data = f"paths.data_dir={shapes_root}"
    rep = export_checkpoint(str(tiny_classifier.last), "both", out_dir=tmp_path, formats=["onnx", "litert"],
                            check_images=3, overrides=[data])
    files = rep["files"]
    assert set(files) == {"onnx_fp32", "onnx_int8", "litert_fp32", "litert_int8"} and rep["scheme"] == "s8"
    for check in files["litert_fp32"]["checks"].values():  # batches 1 and 3 against the float network
        assert check["logits"]["max_abs"] < 1e-4 and check["logits"]["argmax_agree"] == 1.0, check
    fp32, int8 = open_model(tmp_path / "last.fp32.tflite"), open_model(tmp_path / "last.int8.tflite")
    assert (fp32.runtime, fp32.task, fp32.meta["precision"], fp32.input_dtype) == ("litert", "classification", "fp32", "float32")
    assert (int8.meta["precision"], int8.input_dtype) == ("int8", "int8")  # the runner quantizes the image itself
    assert int8.path.stat().st_size < 0.5 * fp32.path.stat().st_size
    # the int8 file is the same converted graph as ONNX Runtime's: the same logits within a few int8 steps
    images = real_images(shapes_root, 5, 48)
    a, b = int8.run(images)["logits"], open_model(tmp_path / "last.int8.onnx").run(images)["logits"]
    assert a.shape == (5, 4) and np.abs(a - b).max() <= 0.1 * max(np.abs(b).max(), 1e-3)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.8
    # tools/eval.py scores the files in LiteRT: fp32 as PyTorch, int8 as ONNX Runtime's int8 file
    scores = {}
    for name in ("last.fp32.tflite", "last.int8.tflite", "last.int8.onnx"):
        scores[name] = evaluate(make_cfg("debug=tiny_classification", f"ckpt={tmp_path / name}", config_name="eval"))
    ref = evaluate(make_cfg("debug=tiny_classification", f"ckpt={tiny_classifier.last}", config_name="eval"))
    assert scores["last.fp32.tflite"]["top1"] == pytest.approx(ref["top1"], abs=1e-9)
    assert scores["last.int8.tflite"]["top1"] == pytest.approx(scores["last.int8.onnx"]["top1"], abs=0.05)
    # the Predictor opens a .tflite by its suffix
    frame = (np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)
    assert Predictor(tmp_path / "last.int8.tflite")(frame)["probs"].shape == (4,)


def test_litert_target_record_and_its_errors(tmp_path):
    from mnv2_tasks.quant.litert_runtime import LiteRtModel

    assert "litert" in check_targets("all") and scheme_for(["litert"]) == "s8" and scheme_for(["onnx", "litert"]) == "s8"
    with pytest.raises(FileNotFoundError, match=r"missing\.tflite.*--format litert"):
        LiteRtModel(tmp_path / "missing.tflite")
    broken = tmp_path / "broken.int8.tflite"
    broken.write_bytes(b"not a flatbuffer at all" * 4)
    with pytest.raises(ValueError, match=r"broken\.int8\.tflite.*re-export"):
        open_model(broken)


def test_a_network_whose_layers_litert_cannot_take_gets_no_litert_file_and_the_reason(tmp_path, caplog):
    """DeepLabV3's image pooling (also in the one-trunk network) declares that LiteRT cannot prepare it: every
    writer of targets skips LiteRT for it with the reason, and writes the others."""
    import torch
    from hydra.utils import instantiate

    from mnv2_tasks.config import compose_train_config
    from mnv2_tasks.models import MobileNetV2
    from mnv2_tasks.quant.targets import write_targets

    net = instantiate(compose_train_config(["task=segmentation", "pretrain=none", "model.net.width_mult=0.35"]).model.net)
    net.eval()
    assert "BROADCAST_TO" in net.unsupported_targets()["litert"]
    assert MobileNetV2(num_classes=4, width_mult=0.35).unsupported_targets() == {}
    with caplog.at_level("WARNING"):
        files = write_targets(["onnx", "litert"], None, net, torch.rand(2, 3, 64, 64), tmp_path, "fp32")
    assert list(files) == ["onnx"] and (tmp_path / "model.fp32.onnx").is_file()
    assert not list(tmp_path.glob("*.tflite")) and "LiteRT XNNPACK fp32 file not written" in caplog.text
