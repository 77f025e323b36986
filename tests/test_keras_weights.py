"""Keras's ImageNet MobileNetV2 files, checked against Keras itself (Keras 3 on the torch backend, no TensorFlow):
a Keras model with non-trivial weights and BatchNorm statistics is written in the published files' format (legacy
HDF5, one group per layer) and read into our network, whose logits must equal Keras's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402 - Keras 3 is in the dev extra: set its backend first

from mnv2_tasks.models import MobileNetV2  # noqa: E402

# Keras models built, randomised, calibrated and run: ~45 s in all, so with the slow tests (CI runs them)
pytestmark = pytest.mark.slow
from mnv2_tasks.models.keras_weights import keras_resolution, read_keras_h5  # noqa: E402
from mnv2_tasks.models.pretrained import load_pretrained, width_of  # noqa: E402


def _keras_file(tmp_path, alpha: float, res: int, top: bool = True, classes: int = 1000):
    """A Keras MobileNetV2 with random weights and BatchNorm statistics, saved as Keras publishes its weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    tmp_path.mkdir(parents=True, exist_ok=True)
    model = keras.applications.MobileNetV2(alpha=alpha, input_shape=(res, res, 3), weights=None, include_top=top,
                                           classes=classes, classifier_activation=None, pooling=None if top else "avg")
    rng = np.random.default_rng(int(alpha * 100) + res)
    for layer in model.layers:  # kernels He-like, BatchNorm affine random
        for w in layer.weights:
            shape, name = tuple(w.shape), w.path.split("/")[-1]
            if name in ("kernel", "depthwise_kernel"):
                fan_in = np.prod(shape[:2]) if "depthwise" in layer.name else np.prod(shape[:-1])
                w.assign(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype("float32"))
            elif name == "gamma":
                w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            elif name in ("beta", "bias"):
                w.assign(rng.normal(0, 0.2, shape).astype("float32"))
    # BatchNorm statistics measured on data, layer after layer, as training leaves them: far from 0 and 1, and
    # such that the logits depend on the image (random statistics make a network whose output hardly does)
    calib = rng.uniform(-1, 1, (8, res, res, 3)).astype("float32")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            a = np.asarray(keras.Model(model.inputs, layer.input)(calib, training=False).detach().cpu())
            layer.moving_mean.assign(a.mean((0, 1, 2)).astype("float32"))
            layer.moving_variance.assign(a.var((0, 1, 2)).astype("float32") + 1e-2)
    path = tmp_path / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{res}{'' if top else '_no_top'}.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return model, path


@pytest.mark.parametrize("alpha,res", [(0.35, 96), (1.0, 128)])
def test_keras_imagenet_files_give_keras_logits(tmp_path, alpha, res):
    model, path = _keras_file(tmp_path, alpha, res)
    state = read_keras_h5(path)
    assert width_of(state) == alpha and keras_resolution(path) == res
    ours = MobileNetV2(num_classes=1000, width_mult=alpha, padding="tf_same").eval()
    report = load_pretrained(ours, path)
    assert report.source_format == "keras" and not report.missing and not report.skipped
    x = np.random.default_rng(0).uniform(-1, 1, (2, res, res, 3)).astype("float32")  # x / 127.5 - 1
    want = np.asarray(model(x, training=False).detach().cpu())
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(want[0] - want[1]).max() > 0.5  # logits that depend on the image: not a comparison of constants
    assert np.abs(got - want).max() < 1e-4
    # PyTorch's symmetric padding on the same weights misses them by far
    sym = MobileNetV2(num_classes=1000, width_mult=alpha).eval()
    load_pretrained(sym, path)
    with torch.no_grad():
        off = sym(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(off - want).max() > 0.1


def test_a_keras_file_without_top_loads_into_a_backbone(tmp_path):
    from mnv2_tasks.models import MobileNetV2Backbone

    model, path = _keras_file(tmp_path, 0.5, 96, top=False)
    bb = MobileNetV2Backbone(0.5, out_indices=(3, 4), padding="tf_same").eval()
    report = load_pretrained(bb, path)
    assert not report.missing
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    pooled = np.asarray(model(x, training=False).detach().cpu())  # global average of Conv_1's output
    full = MobileNetV2(num_classes=10, width_mult=0.5, padding="tf_same").eval()
    load_pretrained(full, path)
    with torch.no_grad():
        ours = full.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).mean((2, 3)).numpy()
    assert np.abs(ours - pooled).max() < 1e-4


def test_training_and_evaluation_from_a_keras_file_take_its_padding_and_preprocessing(tmp_path, make_cfg, caplog):
    """model.pretrained=<Keras .h5> builds the network with TensorFlow's padding and normalises inputs to [-1, 1];
    both are recorded in the checkpoint, and tools/eval.py on the .h5 itself does the same."""
    from mnv2_tasks.checkpoint import load_model
    from mnv2_tasks.evaluate import evaluate
    from mnv2_tasks.train import train

    _, path = _keras_file(tmp_path, 0.35, 96)
    # the paper's table: the Keras file's
    cfg = make_cfg("debug=tiny_classification", "debug/blocks@model.net=paper", "trainer.max_epochs=1", f"model.pretrained={path}")
    with caplog.at_level("INFO"):
        train(cfg)
    assert "model.net.padding=tf_same, data.mean=data.std=[0.5, 0.5, 0.5]" in caplog.text
    net = load_model(f"{cfg.paths.output_dir}/checkpoints/last.ckpt")
    assert net.padding == "tf_same" and net.input_spec["mean"] == [0.5, 0.5, 0.5] == net.input_spec["std"]
    # tools/eval.py on a Keras file itself: its top-1 on the embedded set is the top-1 of Keras's own predictions on
    # the same preprocessed images (resize, centre crop, then [-1, 1])
    model, four = _keras_file(tmp_path / "four", 0.35, 48, classes=4)
    ev = make_cfg("debug=tiny_classification", "debug/blocks@model.net=paper", f"ckpt={four}", config_name="eval")
    caplog.clear()
    with caplog.at_level("INFO"):
        metrics = evaluate(ev)
    assert "is a Keras file" in caplog.text
    from hydra.utils import instantiate

    settings = make_cfg("debug=tiny_classification", "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]")
    dm = instantiate(settings.data)
    dm.setup("validate")
    hits = total = 0
    for batch in dm.val_dataloader():
        images, labels = batch["image"], batch["target"]
        logits = np.asarray(model(images.permute(0, 2, 3, 1).numpy(), training=False).detach().cpu())
        hits += int((logits.argmax(1) == labels.numpy()).sum())
        total += len(labels)
    assert metrics["num_samples"] == total
    assert metrics["top1"] == pytest.approx(hits / total, abs=1e-6)  # (a float32 metric)
