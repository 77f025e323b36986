"""COCO detection data: batch format, category ids <-> labels, crowd and empty images, augmentation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnv2_tasks.data.coco import CocoDataModule, CocoDetection, DataError
from mnv2_tasks.data.det_transforms import MinIoURandomCrop, detection_pipeline, ssd_train_transforms


def shapes_dm(shapes_root: Path, **kw) -> CocoDataModule:
    args = dict(root=str(shapes_root / "coco"), train_ann_file="annotations/instances_train.json", train_img_dir="train",
                val_ann_file="annotations/instances_val.json", val_img_dir="val", image_size=64, batch_size=4, num_workers=0)
    args.update(kw)
    return CocoDataModule(**args)


def test_batches_and_category_round_trip(shapes_root):
    dm = shapes_dm(shapes_root, num_classes=5)
    dm.setup("fit")
    ann = json.loads((shapes_root / "coco/annotations/instances_train.json").read_text())
    cat_ids = sorted(c["id"] for c in ann["categories"])
    assert cat_ids == [1, 3, 7, 12]  # non-contiguous on purpose
    assert dm.num_classes == 5 and dm.label_to_cat_id == [0, 1, 3, 7, 12]
    assert dm.class_names == ["circle", "square", "triangle", "star"]
    ds = dm.train_set
    for cid in cat_ids:  # ids -> labels 1..K -> ids
        assert dm.label_to_cat_id[ds.cat_id_to_label[cid]] == cid
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert abs(float(batch["image"].mean())) < 3  # normalized, not 0..255
    assert len(batch["target"]) == len(batch["meta"]) == 4
    for t, m in zip(batch["target"], batch["meta"]):
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and len(t["labels"]) == len(t["boxes"])
        if len(t["labels"]):
            assert t["labels"].min() >= 1 and t["labels"].max() <= 4
        assert m["orig_size"] == (96, 96) and m["input_size"] == (64, 64)
        assert m["image_id"] in ds.images


def test_wrong_num_classes_is_explained(shapes_root):
    with pytest.raises(DataError, match="set data.num_classes=5"):
        shapes_dm(shapes_root, num_classes=81).setup("fit")


def test_xywh_to_xyxy_crowd_and_empty_images(shapes_root):
    ann_file = shapes_root / "coco/annotations/instances_train.json"
    ann = json.loads(ann_file.read_text())
    ds = CocoDetection(ann_file, shapes_root / "coco/train")
    per_image = {}
    for a in ann["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    empty = [im["id"] for im in ann["images"] if im["id"] not in per_image]
    assert empty and all(i in ds.ids for i in empty)  # negatives are kept
    crowd_img = next(i for i, anns in per_image.items() if any(a["iscrowd"] for a in anns))
    sample = ds[ds.ids.index(crowd_img)]  # no transform: original pixels
    normal = [a for a in per_image[crowd_img] if not a["iscrowd"]]
    crowd = [a for a in per_image[crowd_img] if a["iscrowd"]]
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in normal)])
    torch.testing.assert_close(sample["target"]["boxes"], expected)
    assert sample["target"]["labels"].tolist() == [ds.cat_id_to_label[a["category_id"]] for a in normal]
    assert len(sample["target"]["ignore_boxes"]) == len(crowd)  # crowd regions are not targets
    sample = ds[ds.ids.index(empty[0])]
    assert sample["target"]["boxes"].shape == (0, 4) and sample["target"]["labels"].shape == (0,)


def test_augmentation_keeps_boxes_valid():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [100, 50, 159, 119], [0, 0, 4, 3], [70, 20, 90, 40]], dtype=np.float32)
    labels = np.array([1, 2, 3, 0])
    tf = detection_pipeline(ssd_train_transforms(), 64)
    seen = 0
    for _ in range(100):
        out = tf(image=image, bboxes=boxes, labels=labels)
        b = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert out["image"].shape == (3, 64, 64) and len(out["labels"]) == len(b)
        if len(b):
            assert b.min() >= 0 and b.max() <= 64
            assert (b[:, 2] - b[:, 0] >= 1).all() and (b[:, 3] - b[:, 1] >= 1).all()
        seen += len(b)
    assert seen > 100  # most boxes survive


def test_min_iou_crop_drops_boxes_whose_centre_leaves():
    import albumentations as A

    crop = MinIoURandomCrop(min_ious=[0.0], scale=(0.5, 0.5), aspect=(1.0, 1.0))
    tf = A.Compose([crop], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = [[0, 0, 10, 10], [90, 90, 100, 100], [40, 40, 60, 60]]
    for _ in range(20):
        out = tf(image=image, bboxes=boxes, labels=[1, 2, 3])
        assert out["image"].shape == (50, 50, 3)
        for b, lab in zip(out["bboxes"], out["labels"]):
            # every kept box had its centre inside the crop, so at least half of it survives
            w, h = b[2] - b[0], b[3] - b[1]
            assert w >= 5 - 1e-3 and h >= 5 - 1e-3, (b, lab)


def test_min_iou_crop_meets_its_iou_and_aspect():
    """Every crop MinIoURandomCrop picks (all trials drawn at once) overlaps a box by at least the drawn
    minimum IoU, keeps a box centre inside and has an allowed aspect; otherwise the image is kept whole."""
    import albumentations as A

    crop = MinIoURandomCrop(min_ious=[0.5], scale=(0.3, 1.0), aspect=(0.5, 2.0))
    crop.set_random_seed(0)
    boxes = np.array([[10, 10, 40, 50], [60, 20, 110, 90]], dtype=np.float64)
    data = {"bboxes": np.concatenate([boxes / [120, 100, 120, 100], np.zeros((2, 1))], 1)}
    cropped = 0
    for _ in range(200):
        x0, y0, x1, y1 = crop.get_params_dependent_on_data({"shape": (100, 120)}, data)["crop_coords"]
        if (x0, y0, x1, y1) == (0, 0, 120, 100):
            continue
        cropped += 1
        c = np.array([x0, y0, x1, y1], dtype=np.float64)
        lt, rb = np.maximum(c[:2], boxes[:, :2]), np.minimum(c[2:], boxes[:, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        iou = inter / ((c[2:] - c[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(1) - inter)
        assert iou.max() >= 0.5
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centres > c[:2]) & (centres < c[2:])).all(1).any()
        assert 0.5 - 0.05 <= (x1 - x0) / (y1 - y0) <= 2.0 + 0.05  # aspect drawn before rounding to pixels
    assert cropped > 50


# ---- bad input -------------------------------------------------------------------------------

def _tiny_set(tmp_path: Path, n: int = 2) -> tuple[Path, Path, dict]:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    images = []
    for i in range(1, n + 1):
        Image.fromarray(np.full((40, 50, 3), 100, dtype=np.uint8)).save(img_dir / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 40})
    data = {
        "images": images,
        "annotations": [{"id": 10, "image_id": 1, "category_id": 5, "bbox": [5, 6, 20, 10], "area": 200, "iscrowd": 0}],
        "categories": [{"id": 5, "name": "thing"}],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir, data


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_valid_tiny_set(tmp_path):
    ann, img_dir, _ = _tiny_set(tmp_path)
    ds = CocoDetection(ann, img_dir)
    assert len(ds) == 2 and ds.num_classes == 2
    assert ds[0]["target"]["boxes"].tolist() == [[5.0, 6.0, 25.0, 16.0]]


def test_cached_images_are_decoded_once_and_read_only(tmp_path):
    ann, img_dir, _ = _tiny_set(tmp_path)
    ds = CocoDetection(ann, img_dir, detection_pipeline(ssd_train_transforms(), 32), cache_images=True)
    first = ds.load(0)[0]
    (img_dir / "1.jpg").unlink()  # a second read would fail: it comes from the cache
    again = ds.load(0)[0]
    assert again is first and not again.flags.writeable
    for _ in range(5):  # the augmentations never write into the cached array
        assert ds[0]["image"].shape == (3, 32, 32)
    assert (first == 100).all()
    with pytest.raises(DataError, match="2.jpg"):  # uncached files are still read, and errors still name them
        (img_dir / "2.jpg").unlink()
        ds.load(1)


def test_not_json_and_missing_keys(tmp_path):
    _, img_dir, data = _tiny_set(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{'images': oops")
    with pytest.raises(DataError, match=r"bad\.json: not a JSON file"):
        CocoDetection(bad, img_dir)
    del data["categories"]
    with pytest.raises(DataError, match=r"ann2\.json: missing key\(s\) \['categories'\]"):
        CocoDetection(_write(tmp_path / "ann2.json", data), img_dir)


def test_unknown_category_id(tmp_path):
    _, img_dir, data = _tiny_set(tmp_path)
    data["annotations"][0]["category_id"] = 99
    ann = _write(tmp_path / "ann.json", data)
    with pytest.raises(DataError, match=r"ann\.json: annotations\[0\] \(id 10\) of image 1\.jpg has category_id 99"):
        CocoDetection(ann, img_dir)
    ds = CocoDetection(ann, img_dir, on_bad="warn")  # counted and dropped
    assert ds.problems["unknown category id"] == 1 and len(ds[0]["target"]["boxes"]) == 0


def test_box_outside_image(tmp_path):
    _, img_dir, data = _tiny_set(tmp_path)
    data["annotations"][0]["bbox"] = [40, 6, 20, 10]  # x + w = 60 > width 50
    ann = _write(tmp_path / "ann.json", data)
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 10\) of image 1\.jpg .*extends outside the 50x40 image"):
        CocoDetection(ann, img_dir)
    ds = CocoDetection(ann, img_dir, on_bad="warn")  # clipped
    assert ds.problems["box outside the image"] == 1
    assert ds[0]["target"]["boxes"].tolist() == [[40.0, 6.0, 50.0, 16.0]]
    data["annotations"][0]["bbox"] = [5, 6, 45.5, 10]  # within the 1 px tolerance: clipped silently
    ds = CocoDetection(_write(tmp_path / "ann.json", data), img_dir)
    assert ds[0]["target"]["boxes"].tolist() == [[5.0, 6.0, 50.0, 16.0]] and not ds.problems


def test_missing_and_corrupt_images(tmp_path):
    ann, img_dir, _ = _tiny_set(tmp_path)
    (img_dir / "2.jpg").unlink()
    with pytest.raises(DataError, match=r"images/2\.jpg: image missing on disk \(image id 2"):
        CocoDetection(ann, img_dir)
    ds = CocoDetection(ann, img_dir, on_bad="warn")
    assert len(ds) == 1 and ds.problems["image file missing"] == 1
    (img_dir / "2.jpg").write_bytes(b"not a jpeg at all")
    ds = CocoDetection(ann, img_dir)
    with pytest.raises(DataError, match=r"2\.jpg: corrupt or unreadable image.*image id 2"):
        ds[1]


def test_degenerate_boxes_dropped(tmp_path):
    _, img_dir, data = _tiny_set(tmp_path)
    data["annotations"].append({"id": 11, "image_id": 1, "category_id": 5, "bbox": [5, 6, 0, 10], "iscrowd": 0})
    ds = CocoDetection(_write(tmp_path / "ann.json", data), img_dir)
    assert ds.problems["degenerate box"] == 1 and len(ds[0]["target"]["boxes"]) == 1


def test_auto_workers_follow_the_cores(monkeypatch):
    import os

    from mnv2_tasks.data.loaders import resolve_workers

    assert resolve_workers(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert resolve_workers("auto") == 0  # no spare core for loader processes
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert resolve_workers("auto") == 8


@pytest.mark.parametrize("break_it,message", [
    (lambda d: d["annotations"].append({**d["annotations"][0], "image_id": 2}), r"annotation id 10 appears more than once"),
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), r"image id 1 appears more than once"),
    (lambda d: d["images"][0].update(id="1"), r"images\[0\] has id '1' \(str\); COCO ids are integers"),
    (lambda d: d["categories"].append({"id": 9, "name": d["categories"][0]["name"]}), r"categories \[\d+, 9\] share the name"),
    (lambda d: d["images"][1].update(file_name=d["images"][0]["file_name"]), r"images 1 and 2 are the same file"),
    (lambda d: d.update(images=[], annotations=[]), r"'images' is empty"),
])
def test_what_corrupts_metrics_is_refused_naming_it(tmp_path, break_it, message):
    """pycocotools keeps one object per annotation id and one image per image id: perfect detections of a file with
    repeated ids score below 1 without a word. These are refused before anything runs."""
    _, img_dir, data = _tiny_set(tmp_path)
    break_it(data)
    with pytest.raises(DataError, match=message):
        CocoDetection(_write(tmp_path / "ann.json", data), img_dir)


def test_a_file_reached_twice_through_a_link_is_reported(tmp_path):
    _, img_dir, data = _tiny_set(tmp_path)
    (img_dir / "again.jpg").symlink_to(img_dir / "1.jpg")
    data["images"][1]["file_name"] = "again.jpg"
    with pytest.raises(DataError, match=r"images 1 and 2 are the same file .*again.jpg, through a link to .*1.jpg"):
        CocoDetection(_write(tmp_path / "ann.json", data), img_dir)


def test_evaluation_scores_against_the_ground_truth_the_data_kept(tmp_path):
    """A degenerate box is dropped for training; evaluation must not keep it as an object nobody can find (it did:
    pycocotools read the file, and perfect detections of every kept box scored below 1)."""
    from mnv2_tasks.metrics.coco_eval import CocoEvaluator

    _, img_dir, data = _tiny_set(tmp_path)
    data["annotations"].append({"id": 11, "image_id": 2, "category_id": 5, "bbox": [5, 6, 0, 10], "area": 0, "iscrowd": 0})
    data["annotations"].append({"id": 12, "image_id": 2, "category_id": 5, "bbox": [30, 20, 10, 10], "area": 100, "iscrowd": 0})
    ann = _write(tmp_path / "ann.json", data)
    ds = CocoDetection(ann, img_dir)
    assert ds.problems["degenerate box"] == 1
    gt = ds.ground_truth()
    assert [a["id"] for a in gt["annotations"]] == [10, 12] and len(gt["images"]) == 2
    perfect = [{"boxes": ds[k]["target"]["boxes"], "scores": torch.ones(len(ds[k]["target"]["boxes"])),
                "labels": ds[k]["target"]["labels"]} for k in range(2)]
    metas = [ds[k]["meta"] for k in range(2)]
    for source, expected in ((gt, 1.0), (ann, None)):
        ev = CocoEvaluator(source, ds.label_to_cat_id)
        ev.update(perfect, metas)
        got = ev.compute()["mAP"]
        if expected is not None:
            assert got == pytest.approx(expected)
        else:  # the file as written: the degenerate box counts as a missed object
            assert got < 0.9
    clean = CocoDetection(_write(tmp_path / "clean.json", {**data, "annotations": data["annotations"][:1]}), img_dir)
    assert clean.ground_truth() == clean.ann_file  # nothing dropped: the file itself


def _messy_instances(tmp_path):
    """Degenerate boxes, boxes with no area inside their image, a box past the border within the tolerance, an image
    without a size, crowds, annotations without area or id: what the array reading must keep exactly as the one-by-one."""
    from PIL import Image

    rng = np.random.default_rng(3)
    images, anns = [], []
    for i in range(1, 41):
        Image.new("RGB", (64, 48)).save(tmp_path / f"{i}.png")
        im = {"id": i * 10, "file_name": f"{i}.png"}
        if i != 7:
            im.update(width=64, height=48)
        images.append(im)
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(-0.5, 60), rng.uniform(-0.5, 44)
            w, h = rng.choice([0.0, -1.0, 0.3, 2.0, 5.0, 20.0]), rng.uniform(0.5, 10)
            a = {"image_id": i * 10, "category_id": int(rng.choice([2, 4])), "bbox": [x, y, min(w, 64.9 - x), min(h, 48.9 - y)],
                 "iscrowd": int(rng.random() < 0.1)}
            if rng.random() < 0.8:
                a["area"] = float(rng.uniform(1, 100))
            if rng.random() < 0.9:
                a["id"] = len(anns) + 1000
            anns.append(a)
    anns.append({"image_id": 10, "category_id": 2, "bbox": [64.5, 10, 0.4, 5], "id": 1})  # no area inside
    return {"images": images, "annotations": anns, "categories": [{"id": 2, "name": "a"}, {"id": 4, "name": "b"}]}


def test_array_reading_keeps_exactly_what_the_one_by_one_reading_keeps(tmp_path, monkeypatch):
    from mnv2_tasks.data.coco import CocoDetection

    data = _messy_instances(tmp_path)
    fast = CocoDetection(tmp_path / "x.json", tmp_path, data=data)
    monkeypatch.setattr(CocoDetection, "_read_fast", lambda self, anns, kept: False)
    slow = CocoDetection(tmp_path / "x.json", tmp_path, data=data)
    assert fast.problems == slow.problems and fast.problems["degenerate box"] > 3
    assert fast._examples == slow._examples
    for name in ("ann_boxes", "ann_labels", "ann_crowd", "ann_area", "ann_ids", "ann_offsets"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.ground_truth() == slow.ground_truth()


@pytest.mark.parametrize("bad", ["string_bbox", "unknown_image", "unknown_category", "outside", "float_image_id"])
def test_a_file_with_something_to_say_is_read_one_by_one_with_its_message(tmp_path, bad):
    from mnv2_tasks.data.coco import CocoDetection, DataError

    data = _messy_instances(tmp_path)
    a = data["annotations"][0]
    a.update({"string_bbox": {"bbox": ["1", "2", "3", "4"]}, "unknown_image": {"image_id": 99999},
              "unknown_category": {"category_id": 77}, "outside": {"bbox": [50.0, 10.0, 30.0, 5.0]},
              "float_image_id": {"image_id": 10.5}}[bad])
    with pytest.raises(DataError, match=r"annotations\[0\]"):
        CocoDetection(tmp_path / "x.json", tmp_path, data=data)
