"""A bad sample or a bad setting never costs a run: found before training, named, skipped on request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CLS, TINY_DET, TINY_SEG, compose_cfg  # noqa: E402
from mnv2_tasks.config_check import ConfigError
from mnv2_tasks.data.images import DataError
from mnv2_tasks.train import train

# the tiny presets, one epoch: these runs train on a broken copy of the data
SEG = [*TINY_SEG, "trainer.max_epochs=1"]
CLS = [*TINY_CLS, "trainer.max_epochs=1"]
DET = [*TINY_DET, "trainer.max_epochs=1"]


@pytest.fixture
def data_copy(shapes_root, tmp_path) -> Path:
    """A copy of the embedded test set that a test may break."""
    return Path(shutil.copytree(shapes_root, tmp_path / "data"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _runs(overrides, data, tmp_path, name="run"):
    return compose_cfg(list(overrides), tmp_path / name, data)


def test_stray_mask_value_stops_before_training_or_is_skipped(data_copy, tmp_path):
    voc = data_copy / "voc"
    stem = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[3]
    mask_path = voc / "SegmentationClass" / f"{stem}.png"
    im = Image.open(mask_path)
    mask = np.asarray(im).copy()
    mask[5, 5] = 7  # one stray value in a 5-class set
    out = Image.fromarray(mask, mode="P")
    out.putpalette(im.getpalette())
    out.save(mask_path)
    cfg = _runs(SEG, data_copy, tmp_path)
    with pytest.raises(DataError, match=rf"(?s)1 bad sample.*{stem}.png: mask values \[7\]"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before the first training step
    metrics = train(_runs([*SEG, "data.on_bad=warn"], data_copy, tmp_path, "warn"))
    saved = json.loads((tmp_path / "warn" / "metrics.json").read_text())
    assert saved["skipped_samples"] == 1 == metrics["skipped_samples"]


@pytest.mark.parametrize("fmt", ["imagefolder", "coco"])
def test_truncated_jpeg_stops_before_training_or_is_skipped(fmt, data_copy, tmp_path):
    if fmt == "imagefolder":
        bad = sorted((data_copy / "imagefolder" / "train" / "circle").glob("*.jpg"))[2]
        overrides = CLS
    else:
        bad = sorted((data_copy / "coco" / "train").glob("*.jpg"))[2]
        overrides = DET
    _truncate(bad)
    with pytest.raises(DataError, match=rf"{bad.name}: truncated JPEG file"):
        train(_runs(overrides, data_copy, tmp_path))
    metrics = train(_runs([*overrides, "data.on_bad=warn"], data_copy, tmp_path, "warn"))
    assert metrics["skipped_samples"] == 1


def test_a_sample_that_breaks_while_training_is_skipped_or_checkpointed(data_copy, tmp_path):
    """With the pre-flight check off, a bad file is met while training: warn skips it (counted); error saves
    a checkpoint of where the run was, then stops naming the file."""
    bad = sorted((data_copy / "imagefolder" / "train" / "square").glob("*.jpg"))[0]
    bad.write_bytes(b"not an image any more")
    metrics = train(_runs([*CLS, "data.preflight=false", "data.on_bad=warn"], data_copy, tmp_path, "warn"))
    assert metrics["skipped_samples"] == 1  # seen once, in the one training epoch
    with pytest.raises(DataError, match=rf"{bad.name}: corrupt or unreadable image"):
        train(_runs([*CLS, "data.preflight=false"], data_copy, tmp_path, "error"))
    saved = torch.load(tmp_path / "error" / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert saved["mnv2_tasks"]["task"] == "classification" and "state_dict" in saved


def test_image_size_is_honoured_and_recorded(tiny_classifier):
    ckpt = torch.load(tiny_classifier.last, weights_only=True)
    spec = ckpt["mnv2_tasks"]["input"]
    assert spec["image_size"] == [48, 48]  # debug=tiny_classification's, not the data config's 64; one form: [H, W]
    from mnv2_tasks.data.inference import EvalPreprocess

    assert EvalPreprocess(spec)(np.zeros((64, 64, 3), np.uint8)).shape == (3, 48, 48)  # what the run used


def test_bad_settings_are_refused_before_anything_runs(make_cfg, tmp_path):
    cfg = make_cfg(*CLS, "data.image_size=-5", "data.batch_size=0", "model.net.width_mult=3.0")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    msg = str(e.value)
    assert "data.image_size=-5: must be an integer >= 8" in msg and "data.batch_size=0: must be an integer >= 1" in msg
    assert "model.net.width_mult=3.0: must be a number in [0.1, 2.0]" in msg
    assert not Path(cfg.paths.output_dir).exists()  # nothing ran, nothing was written


def test_category_ids_travel_with_the_model(make_cfg, shapes_root, tmp_path, caplog, tiny_detector):
    from mnv2_tasks.checkpoint import CheckpointError
    from mnv2_tasks.evaluate import evaluate

    ckpt = str(tiny_detector.last)
    meta = torch.load(ckpt, weights_only=True)["mnv2_tasks"]["input"]
    assert meta["category_ids"] == [1, 3, 7, 12] and meta["class_names"] == ["circle", "square", "triangle", "star"]
    ann = json.loads((shapes_root / "coco" / "annotations" / "instances_val.json").read_text())
    # other ids, other names: refused
    other = json.loads(json.dumps(ann))
    remap = {1: 21, 3: 23, 7: 27, 12: 32}
    for c in other["categories"]:
        c["id"], c["name"] = remap[c["id"]], c["name"] + "_x"
    for a in other["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    (tmp_path / "other.json").write_text(json.dumps(other))
    val_dir = str(shapes_root / "coco" / "val")
    with pytest.raises(CheckpointError, match=r"other.json: the data's categories .* are not the model's"):
        evaluate(make_cfg(*DET, f"ckpt={ckpt}", f"data.val_ann_file={tmp_path / 'other.json'}", f"data.val_img_dir={val_dir}",
                          config_name="eval"))
    # other ids, same names: mapped by name, logged, and the file's own ids written
    renamed = json.loads(json.dumps(ann))
    reids = {1: 12, 3: 7, 7: 3, 12: 1}  # the same names under shuffled ids
    for c in renamed["categories"]:
        c["id"] = reids[c["id"]]
    for a in renamed["annotations"]:
        a["category_id"] = reids[a["category_id"]]
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    eval_cfg = make_cfg(*DET, f"ckpt={ckpt}", f"data.val_ann_file={tmp_path / 'renamed.json'}", f"data.val_img_dir={val_dir}",
                        config_name="eval")
    got = evaluate(eval_cfg)
    plain = evaluate(make_cfg(*DET, f"ckpt={ckpt}", config_name="eval"))
    assert "mapping the model's labels by name" in caplog.text
    assert got["mAP"] == pytest.approx(plain["mAP"], abs=1e-9)  # the same answers, scored under the file's ids
    written = json.loads(Path(got["predictions_file"]).read_text())
    assert {r["category_id"] for r in written} <= {1, 3, 7, 12} and written


def test_a_killed_generation_leaves_nothing_behind(tmp_path):
    from mnv2_tasks.data.shapes import ensure_shapes

    root = tmp_path / "shapes-v2"
    from mnv2_tasks.launch import host_tag

    host = host_tag().rsplit("-", 1)[0]
    stale = tmp_path / f"shapes-v2.tmp-{host}-999999"  # a pid that is not running on this host
    elsewhere = tmp_path / "shapes-v2.tmp-othernode-999999"  # another host's generation (a shared disk): not ours to remove
    (stale / "voc").mkdir(parents=True)
    (elsewhere / "voc").mkdir(parents=True)
    ensure_shapes(root, num_train=4, num_val=2, image_size=64, cls_per_class_train=2, cls_per_class_val=1, cls_image_size=32)
    assert not stale.exists() and elsewhere.exists() and (root / "COMPLETE.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shapes-v2.lock", "shapes-v2", elsewhere.name]


def test_a_finished_set_is_never_replaced_by_a_racing_generation(tmp_path):
    """Two nodes on one shared disk, the lock not honoured: the second to finish keeps the first's set."""
    from mnv2_tasks.data import shapes

    root = tmp_path / "shapes-v2"
    kw = dict(num_train=4, num_val=2, image_size=64, cls_per_class_train=2, cls_per_class_val=1, cls_image_size=32)
    shapes.ensure_shapes(root, **kw)
    first = (root / "COMPLETE.json").stat().st_ino
    shapes._generate(root, {**shapes.DEFAULT_PARAMS, **kw, "version": shapes.VERSION})  # the racing node's late finish
    assert (root / "COMPLETE.json").stat().st_ino == first  # the published set stayed in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shapes-v2.lock", "shapes-v2"]


def test_more_bad_settings_are_refused_before_anything_runs(make_cfg):
    """Settings that used to fail only at the first step or deep in a library."""
    cfg = make_cfg(*CLS, "model.label_smoothing=1.5", "torch_threads=0", "seed=-3", "model.net.num_classes=1",
                   "data.num_classes=1")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    msg = str(e.value)
    for expected in ("model.label_smoothing=1.5: must be a number in [0, 1)", "torch_threads=0: must be null (one per core)",
                     "seed=-3: must be null or an integer in [0, 2**32)", "model.net.num_classes=1: a classifier needs at least 2"):
        assert expected in msg, msg
    q = make_cfg(*CLS, "quant=qat", "quant.calibration_images=0")
    with pytest.raises(ConfigError, match=r"quant.calibration_images=0: must be an integer >= 1"):
        train(q)
    assert not Path(cfg.paths.output_dir).exists()


def test_an_output_directory_without_room_or_rights_is_refused_before_the_first_epoch(make_cfg, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from mnv2_tasks.atomic_files import WriteError

    (tmp_path / "a_file").write_text("not a directory")
    cfg = make_cfg(*CLS)
    cfg.paths.output_dir = str(tmp_path / "a_file" / "run")
    with pytest.raises(WriteError, match=r"a_file/run: the run cannot write its checkpoints there"):  # a file in the way
        train(cfg)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    cfg = make_cfg(*CLS)
    with pytest.raises(WriteError, match=r"run: 0.0 MB free, the run's checkpoints need about \d+\.\d MB"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
