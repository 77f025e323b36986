"""Detection labels in the users' formats: YOLO and VOC XML read into the COCO module's samples, ``mnv2-convert``
round trips, classes from the data, and evaluation that remembers the run's data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnv2_tasks.data.convert import convert, main as convert_main, read_any
from mnv2_tasks.data.voc_xml import read_voc
from mnv2_tasks.data.yolo_labels import read_yolo, yolo_label_path
from mnv2_tasks.data.images import DataError


def _boxes(ds, with_crowd=True):
    """(image id, class name, crowd) -> sorted boxes, for comparing two readings of one set."""
    name = {c["id"]: c["name"] for c in ds.coco["categories"]}
    return sorted((a["image_id"], name[a["category_id"]], int(bool(a.get("iscrowd"))), *a["bbox"])
                  for a in ds.coco["annotations"] if with_crowd or not a.get("iscrowd"))


def _same(a, b, tol=1e-3):
    assert len(a) == len(b)
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert np.abs(np.array([x[3:] for x in a]) - np.array([x[3:] for x in b])).max() < tol


def test_convert_round_trips_every_format_exactly(shapes_root, tmp_path, capsys):
    coco = shapes_root / "coco"
    src = read_any("coco", coco, "val")
    assert any(a["iscrowd"] for a in src.coco["annotations"])  # the embedded set has crowd regions to carry
    assert convert_main([str(coco), str(tmp_path / "yolo"), "--to", "yolo", "--splits", "train", "val"]) == 0
    out = capsys.readouterr().out
    assert "crowd regions dropped (YOLO has no crowd field)" in out and "negatives" in out
    convert(coco, tmp_path / "voc", "voc", ["val"])
    # back to COCO from each, and across
    convert(tmp_path / "yolo", tmp_path / "coco_from_yolo", "coco", ["val"])
    convert(tmp_path / "voc", tmp_path / "coco_from_voc", "coco", ["val"])
    convert(tmp_path / "yolo", tmp_path / "voc_from_yolo", "voc", ["val"])
    yolo, voc = read_any("yolo", tmp_path / "yolo", "val"), read_any("voc", tmp_path / "voc", "val")
    for back in (read_any("coco", tmp_path / "coco_from_voc", "val"), voc):
        _same(_boxes(src), _boxes(back))  # crowd regions travel as VOC 'difficult'
    for back in (read_any("coco", tmp_path / "coco_from_yolo", "val"), yolo, read_any("voc", tmp_path / "voc_from_yolo", "val")):
        _same(_boxes(src, with_crowd=False), _boxes(back))
    # class names in order, image ids and sizes kept; YOLO also keeps COCO's category ids
    assert yolo.class_names == voc.class_names == src.class_names
    assert [c["id"] for c in read_any("coco", tmp_path / "coco_from_yolo", "val").coco["categories"]] == \
        sorted(c["id"] for c in src.coco["categories"])
    ids = lambda ds: sorted((im["id"], im["width"], im["height"]) for im in ds.coco["images"])  # noqa: E731
    assert ids(src) == ids(yolo) == ids(voc)
    # negatives: images without a label file in YOLO, without an object in VOC
    negatives = {im["id"] for im in src.coco["images"]} - {a["image_id"] for a in src.coco["annotations"] if not a["iscrowd"]}
    assert negatives and all(not yolo_label_path(tmp_path / "yolo" / im["file_name"]).exists()
                             for im in yolo.coco["images"] if im["id"] in negatives)
    # VOC's 1-based pixels: COCO x = xmin - 1
    a = src.coco["annotations"][0]
    im = next(i for i in src.coco["images"] if i["id"] == a["image_id"])
    xml = (tmp_path / "voc" / "Annotations" / f"{Path(im['file_name']).stem}.xml").read_text()
    assert f"<xmin>{a['bbox'][0] + 1:g}</xmin>" in xml


def _image(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


@pytest.mark.parametrize("layout", ["images/train", "train/images"])
def test_yolo_reads_both_sibling_layouts_lists_polygons_and_negatives(tmp_path, layout):
    imgs = tmp_path / layout
    _image(imgs / "a.jpg")
    _image(imgs / "b.png")  # no label file: a negative
    labels = yolo_label_path(imgs / "a.jpg")
    labels.parent.mkdir(parents=True)
    labels.write_text("0 0.5 0.5 0.5 0.2\n1 0.1 0.1 0.3 0.1 0.2 0.4\n")  # a box, and a polygon (its bounding box)
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: {layout}\nval: {layout}\nnames: [car, person]\n")
    ds = read_yolo(tmp_path, "val")
    assert ds.class_names == ["car", "person"] and len(ds.coco["images"]) == 2
    boxes = sorted((a["category_id"], *np.round(a["bbox"], 6)) for a in ds.coco["annotations"])
    assert boxes == [(1, 10.0, 12.0, 20.0, 6.0), (2, 4.0, 3.0, 8.0, 9.0)]
    # a .txt list of images, relative to the list ('./') or to path
    (tmp_path / "val.txt").write_text(f"./{layout}/a.jpg\n")
    (tmp_path / "data.yaml").write_text(f"train: {layout}\nval: val.txt\nnames: {{0: car, 1: person}}\n")
    assert len(read_yolo(tmp_path, "val").coco["annotations"]) == 2


def test_yolo_bad_labels_name_the_file_and_line(tmp_path):
    _image(tmp_path / "images" / "val" / "a.jpg")
    (tmp_path / "data.yaml").write_text("train: images/val\nval: images/val\nnames: [car]\n")
    label = tmp_path / "labels" / "val" / "a.txt"
    label.parent.mkdir(parents=True)
    for text, said in (("3 0.5 0.5 0.1 0.1", "not one of 0..0"), ("0 50 40 10 10", "normalised"),
                       ("0 0.5 0.5", "expected 'class cx cy w h'")):
        label.write_text("0 0.5 0.5 0.2 0.2\n" + text + "\n")
        with pytest.raises(DataError, match=rf"{label}:2: .*{said}"):
            read_yolo(tmp_path, "val")
    ds = read_yolo(tmp_path, "val", on_bad="warn")
    assert len(ds.coco["annotations"]) == 1 and ds.problems["bad label lines dropped"] == 1
    (tmp_path / "data.yaml").write_text("train: images/val\nnames: [car]\n")
    with pytest.raises(DataError, match="no 'val' entry"):
        read_yolo(tmp_path, "val")
    with pytest.raises(DataError, match="no YOLO data.yaml"):
        read_yolo(tmp_path / "images", "val")


def _voc(tmp_path: Path, objects: str, labelmap: str | None = None) -> Path:
    _image(tmp_path / "JPEGImages" / "x1.jpg")
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    (tmp_path / "Annotations" / "x1.xml").write_text(
        f"<annotation><filename>x1.jpg</filename><size><width>40</width><height>30</height></size>{objects}</annotation>")
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("x1\n")
    if labelmap:
        (tmp_path / "labelmap.txt").write_text(labelmap)
    return tmp_path


def _obj(name, box, difficult=0):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")


def test_voc_xml_is_one_based_with_difficult_as_crowd_and_classes_from_the_data(tmp_path):
    root = _voc(tmp_path, _obj("dog", (1, 1, 40, 30)) + _obj("cat", (5, 6, 10, 12), difficult=1))
    ds = read_voc(root, "val")
    assert ds.class_names == ["cat", "dog"]  # the names found, sorted
    got = sorted((a["category_id"], a["iscrowd"], *a["bbox"]) for a in ds.coco["annotations"])
    assert got == [(1, 1, 4.0, 5.0, 6.0, 7.0), (2, 0, 0.0, 0.0, 40.0, 30.0)]  # pixel 1..40 is the whole 40-px image
    # labelmap.txt (CVAT / Datumaro) gives the order; a class outside it is named
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ndog:::\ncat:::\n")
    assert read_voc(root, "val").class_names == ["dog", "cat"]
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\ndog:::\n")
    with pytest.raises(DataError, match=r"x1.xml: object 2: class 'cat' is not in the class list"):
        read_voc(root, "val")
    with pytest.raises(DataError, match=r"train.txt: the train split's list of image ids is missing.*data=voc_det"):
        read_voc(root, "train")


# ---- the same set in three formats: the same samples, the same mAP, the same training --------------------------------


@pytest.fixture(scope="session")
def three_formats(shapes_root, tmp_path_factory) -> dict[str, list[str]]:
    """The embedded detection set without its crowd regions as COCO, YOLO and VOC XML (by mnv2-convert); the data
    overrides that read each."""
    out = tmp_path_factory.mktemp("formats")
    coco = shapes_root / "coco"
    convert(coco, out / "coco", "coco", no_crowd=True)
    convert(out / "coco", out / "yolo", "yolo")
    convert(out / "coco", out / "voc", "voc")
    return {"coco": ["data=coco", f"data.root={out / 'coco'}", "data.train_ann_file=annotations/instances_train.json",
                     "data.train_img_dir=train", "data.val_ann_file=annotations/instances_val.json", "data.val_img_dir=val"],
            "yolo": ["data=yolo", f"data.root={out / 'yolo'}"],
            "voc": ["data=voc_det", f"data.root={out / 'voc'}"]}


def test_one_detector_scores_the_same_map_on_every_format(make_cfg, tiny_detector, three_formats):
    from mnv2_tasks.evaluate import evaluate

    got = {fmt: evaluate(make_cfg(*tiny_detector.overrides, *data, f"ckpt={tiny_detector.last}", config_name="eval"))
           for fmt, data in three_formats.items()}
    assert got["coco"]["mAP"] > 0
    for fmt in ("yolo", "voc"):
        for key in ("mAP", "mAP50", "mAP75"):
            assert got[fmt][key] == pytest.approx(got["coco"][key], abs=1e-4), (fmt, key)


def _losses(run_dir: Path) -> list[float]:
    import csv

    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_training_reads_every_format_alike_and_eval_remembers_the_run(make_cfg, three_formats, tmp_path):
    """Two epochs from one seed on each format: the same loss curve. Then the YOLO run's checkpoint evaluated with
    no data overrides (mnv2-eval ckpt=...) reproduces its final mAP: the run's data config travels with it."""
    from mnv2_tasks.evaluate import evaluate, with_recorded_run
    from mnv2_tasks.train import train

    runs = {}
    for fmt, data in three_formats.items():
        cfg = make_cfg("debug=tiny_detection", *data, "data.image_size=64", "data.batch_size=8", "trainer.log_every_n_steps=1")
        cfg.paths.output_dir = str(tmp_path / fmt)
        assert cfg.data.num_classes is None  # no K + 1 by hand: the classes come from the data
        runs[fmt] = (train(cfg), cfg)
        assert cfg.data.num_classes == 5 and cfg.model.net.num_classes == 5
    curves = {fmt: _losses(tmp_path / fmt) for fmt in runs}
    assert len(curves["coco"]) >= 4
    for fmt in ("yolo", "voc"):
        assert curves[fmt] == pytest.approx(curves["coco"], rel=1e-4), fmt
    # evaluate the YOLO run with nothing but its checkpoint: task, network and data come from it
    ckpt = tmp_path / "yolo" / "checkpoints" / "last.ckpt"
    ecfg = with_recorded_run(make_cfg(f"ckpt={ckpt}", "task=classification", config_name="eval"), [f"ckpt={ckpt}"])
    assert ecfg.task == "detection" and ecfg.data._target_.endswith("YoloDataModule")
    assert evaluate(ecfg)["mAP"] == pytest.approx(runs["yolo"][0]["mAP"], abs=1e-6)
    # a data override still wins: the same checkpoint on the COCO copy
    coco_root = three_formats["coco"][1]
    ecfg = with_recorded_run(make_cfg(f"ckpt={ckpt}", *three_formats["coco"], config_name="eval"),
                             [f"ckpt={ckpt}", *three_formats["coco"]])
    assert ecfg.data._target_.endswith("CocoDataModule") and f"data.root={ecfg.data.root}" == coco_root


def test_detection_on_the_mask_set_points_to_the_box_set(make_cfg):
    from mnv2_tasks.config_check import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"serves \['segmentation'\], not task=detection.*data=voc_det"):
        check_config(make_cfg("task=detection", "data=voc", "data.root=/nowhere"))


# ---- see the labels -----------------------------------------------------------------------------------------------


def test_browse_draws_augmented_samples_with_their_labels(make_cfg, three_formats, tmp_path):
    from PIL import Image

    from mnv2_tasks.browse import browse
    from mnv2_tasks.visualize import _BOX_COLOURS, draw_prediction, to_frame

    cfg = make_cfg("task=detection", *three_formats["yolo"], "data.image_size=64")
    out = browse(cfg, num_images=4, out=tmp_path / "grid.png")
    grid = Image.open(out)
    assert grid.size == (2 * 66, 2 * (64 + 12 + 2))  # 2 x 2 tiles of 64 px, each captioned with its file name
    # a box of the ground truth is drawn in its class colour at its corner
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup("validate")
    sample = next(dm.val_set[k] for k in range(len(dm.val_set)) if len(dm.val_set[k]["target"]["boxes"]))
    truth = dm.truth_of(sample)
    assert truth["names"][0] in dm.class_names
    frame = to_frame(sample["image"], dm.input_spec()["mean"], dm.input_spec()["std"])
    drawn = np.asarray(draw_prediction(frame, truth))
    x0, y0 = (min(int(v), 63) for v in truth["boxes"][0][:2])
    colour = _BOX_COLOURS[int(truth["labels"][0]) % len(_BOX_COLOURS)]
    assert tuple(drawn[y0, x0]) == colour and tuple(frame[y0, x0]) != colour
    # a prediction with nothing over the threshold says so (a caption strip) instead of showing a bare picture
    weak = {"boxes": truth["boxes"][:1], "labels": truth["labels"][:1], "scores": np.array([0.1]), "names": truth["names"][:1]}
    assert np.asarray(draw_prediction(frame, weak, 0.3)).shape[0] == 64 + 12
    assert np.asarray(draw_prediction(frame, weak, 0.05)).shape[0] == 64


def test_real_data_keeps_its_own_sizes_and_skips_the_embedded_pretraining(make_cfg, three_formats, caplog):
    from mnv2_tasks.train import _pretrained_backbone

    cfg = make_cfg("task=detection", *three_formats["yolo"])
    assert cfg.pretrain is not None and cfg.data.image_size == 320 and cfg.data.batch_size == 32  # conf/data/yolo.yaml's
    with caplog.at_level("WARNING"):
        assert _pretrained_backbone(cfg) is None
    assert "pretrain=embedded is for the embedded data set only" in caplog.text and "FROM SCRATCH" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _pretrained_backbone(make_cfg("task=detection", "pretrain=none")) is None
    assert "FROM SCRATCH" in caplog.text
    seg = make_cfg("task=segmentation", "data=voc", "data.root=/data/VOC2012")
    assert seg.data.crop_size == 513 and seg.data.batch_size == 16  # conf/data/voc.yaml's, not the embedded set's


# ---- your camera's files: EXIF-rotated and 16-bit copies read as the originals everywhere ---------------------------


def test_rotated_and_16_bit_copies_train_evaluate_and_predict_as_the_originals(make_cfg, shapes_root, tiny_detector, tmp_path):
    """The embedded val set, copied twice: each image stored turned with EXIF Orientation=6 (as a phone writes it),
    and as 16-bit (v * 257, as a machine-vision camera writes it). The annotation file is the same (sizes are the
    displayed image's). Samples, the detector's mAP and the Predictor's boxes equal the originals'."""
    import cv2
    from hydra.utils import instantiate

    from mnv2_tasks.data.images import read_rgb
    from mnv2_tasks.evaluate import evaluate
    from mnv2_tasks.predict import Predictor

    coco = shapes_root / "coco"
    ann = json.loads((coco / "annotations" / "instances_val.json").read_text())
    for kind in ("rotated", "sixteen"):
        (tmp_path / kind).mkdir()
        for im in ann["images"]:
            pixels = read_rgb(coco / "val" / im["file_name"])
            if kind == "rotated":
                exif = Image.new("RGB", (1, 1)).getexif()
                exif[0x0112] = 6
                Image.fromarray(np.rot90(pixels, 1).copy()).save(tmp_path / kind / im["file_name"], format="PNG",
                                                                 exif=exif.tobytes())
            else:  # 48-bit RGB PNG
                assert cv2.imwrite(str(tmp_path / kind / (im["file_name"] + ".png")), pixels[..., ::-1].astype(np.uint16) * 257)
                (tmp_path / kind / (im["file_name"] + ".png")).rename(tmp_path / kind / im["file_name"])
    over = lambda d: [f"data.val_img_dir={tmp_path / d}"]  # noqa: E731
    base = [*tiny_detector.overrides, f"ckpt={tiny_detector.last}"]
    dms = {d: instantiate(make_cfg(*base, *over(d), config_name="eval").data) for d in ("val", "rotated", "sixteen")}
    dms["val"] = instantiate(make_cfg(*base, config_name="eval").data)
    for dm in dms.values():
        dm.setup("validate")
    for k in range(len(dms["val"].val_set)):
        a = dms["val"].val_set[k]
        for d in ("rotated", "sixteen"):
            b = dms[d].val_set[k]
            assert torch_equal(a["image"], b["image"]) and torch_equal(a["target"]["boxes"], b["target"]["boxes"]), (d, k)
    maps = {d: evaluate(make_cfg(*base, *(over(d) if d != "val" else []), config_name="eval"))["mAP"] for d in dms}
    assert maps["rotated"] == maps["sixteen"] == maps["val"]
    predictor = Predictor(tiny_detector.last)
    for im in ann["images"][:4]:
        want = predictor(read_rgb(coco / "val" / im["file_name"]))
        for d in ("rotated", "sixteen"):
            got = predictor(read_rgb(tmp_path / d / im["file_name"]))
            assert got["boxes"].shape == want["boxes"].shape and np.abs(got["boxes"] - want["boxes"]).max(initial=0) <= 1.0


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))
