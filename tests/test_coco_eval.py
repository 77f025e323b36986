"""pycocotools evaluation on a tiny hand-made set whose answers are known."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mnv2_tasks.metrics.coco_eval import SUMMARY_KEYS, CocoEvaluator, evaluate_results

# two categories with non-contiguous ids; image 3 has no ground truth
GT = {
    "images": [{"id": 1, "width": 200, "height": 100, "file_name": "1.jpg"},
               {"id": 2, "width": 200, "height": 100, "file_name": "2.jpg"},
               {"id": 3, "width": 200, "height": 100, "file_name": "3.jpg"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 100, 50], "area": 5000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [120, 20, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 9, "bbox": [50, 30, 20, 20]},  # no area / iscrowd: filled in
    ],
    "categories": [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
}
LABEL_TO_CAT = [0, 3, 9]


def xyxy(x, y, w, h):
    return [x, y, x + w, y + h]


def meta(image_id, input_size=(100, 200)):
    return {"image_id": image_id, "orig_size": (100, 200), "input_size": input_size}


def perfect_preds(scale=(1.0, 1.0)):
    sx, sy = scale
    def box(b):
        return [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
    return [
        {"boxes": torch.tensor([box(xyxy(10, 10, 100, 50)), box(xyxy(120, 20, 40, 40))]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([box(xyxy(50, 30, 20, 20))]), "scores": torch.tensor([0.7]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def test_perfect_predictions_score_one(tmp_path):
    ev = CocoEvaluator(GT, LABEL_TO_CAT)
    ev.update(perfect_preds(), [meta(1), meta(2), meta(3)])
    m = ev.compute(tmp_path / "preds.json")
    assert set(SUMMARY_KEYS) <= set(m)
    for k in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "AR100"):
        assert m[k] == pytest.approx(1.0), k
    assert math.isnan(m["mAP_large"])  # no large ground truth
    assert m["num_images"] == 3 and m["num_detections"] == 3
    # results file: original category ids, xywh in original pixels; pycocotools gives the same numbers on it
    results = json.loads((tmp_path / "preds.json").read_text())
    assert {r["category_id"] for r in results} == {3, 9}
    assert [10, 10, 100, 50] in [[round(v, 4) for v in r["bbox"]] for r in results]
    again, _ = evaluate_results(GT, results)
    assert again["mAP"] == pytest.approx(m["mAP"])


def test_predictions_mapped_back_from_input_size():
    """The model saw 100x50 inputs (half size): boxes are scaled back to the 200x100 originals."""
    ev = CocoEvaluator(GT, LABEL_TO_CAT)
    ev.update(perfect_preds(scale=(0.5, 0.5)), [meta(1, (50, 100)), meta(2, (50, 100)), meta(3, (50, 100))])
    assert ev.compute()["mAP"] == pytest.approx(1.0)


def test_shifted_box_gives_the_iou_effect():
    """One box shifted so that IoU = 0.62: a hit at IoU thresholds .50, .55, .60 only -> AP 3/10."""
    gt = {"images": [GT["images"][0]], "categories": GT["categories"],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 0, 100, 100], "area": 10000, "iscrowd": 0}]}
    dx = 38 / 1.62  # IoU = (100 - dx) / (100 + dx) = 0.62
    ev = CocoEvaluator(gt, LABEL_TO_CAT)
    ev.update([{"boxes": torch.tensor([xyxy(10 + dx, 0, 100, 100)]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}],
              [meta(1)])
    m = ev.compute()
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP75"] == pytest.approx(0.0)
    assert m["mAP"] == pytest.approx(0.3)
    # the wrong class is no hit at all
    ev.reset()
    ev.update([{"boxes": torch.tensor([xyxy(10, 0, 100, 100)]), "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}], [meta(1)])
    assert ev.compute()["mAP"] == pytest.approx(0.0)


def test_empty_predictions_and_images_without_ground_truth():
    ev = CocoEvaluator(GT, LABEL_TO_CAT)
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    ev.update([empty, empty], [meta(1), meta(2)])
    m = ev.compute()
    assert m["mAP"] == 0.0 and m["num_detections"] == 0
    # only an image without ground truth, with a false positive: nothing to score, no crash
    ev.reset()
    ev.update([{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}], [meta(3)])
    m = ev.compute()
    assert math.isnan(m["mAP"]) and m["num_images"] == 1
    # a false positive on the empty image lowers precision on the others
    ev.reset()
    fp = {"boxes": torch.tensor([xyxy(0, 0, 50, 50)]), "scores": torch.tensor([0.95]), "labels": torch.tensor([2])}
    ev.update(perfect_preds()[:2] + [fp], [meta(1), meta(2), meta(3)])
    assert ev.compute()["mAP"] < 1.0


def test_only_seen_images_are_evaluated():
    """A partial pass (e.g. limit_val_batches) is scored on the images it saw, not the whole file."""
    ev = CocoEvaluator(GT, LABEL_TO_CAT)
    ev.update(perfect_preds()[:1], [meta(1)])
    m = ev.compute()
    assert m["mAP"] == pytest.approx(1.0) and m["num_images"] == 1


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ev = CocoEvaluator(GT, LABEL_TO_CAT)
    preds, metas = perfect_preds(), [meta(1), meta(2), meta(3)]
    ev.update(preds[rank::world], metas[rank::world])  # each rank sees part of the set
    m = ev.compute()
    with open(f"{out_file}.{rank}", "w") as f:
        json.dump({k: m[k] for k in ("mAP", "num_images", "num_detections")}, f)
    torch.distributed.destroy_process_group()


def test_ddp_gathers_every_rank(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "m")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    for rank in range(2):
        m = json.loads(open(f"{out}.{rank}").read())
        assert m == {"mAP": pytest.approx(1.0), "num_images": 3, "num_detections": 3}


def _random_case(seed: int, crowd: bool, empty_images: int, no_results: bool = False):
    """A random ground truth (crowd regions, images without objects, every area range) and noisy detections."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(1, 41)]
    anns, results = [], []
    for im in images[: len(images) - empty_images]:
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(4, 300, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            is_crowd = int(crowd and rng.random() < 0.15)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice([1, 5, 7])),
                         "bbox": [x, y, w, h], "area": float(w * h * rng.uniform(0.5, 1.0)), "iscrowd": is_crowd})
    for im in images:
        for _ in range(int(rng.integers(0, 30))):
            w, h = rng.uniform(2, 320, 2)
            results.append({"image_id": im["id"], "category_id": int(rng.choice([1, 5, 7])),
                            "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), float(w), float(h)],
                            "score": float(rng.random())})
    for a in anns[::2]:  # near-hits: the matching is exercised at every IoU threshold
        x, y, w, h = a["bbox"]
        d = rng.normal(0, 0.08 * min(w, h), 4)
        results.append({"image_id": a["image_id"], "category_id": a["category_id"],
                        "bbox": [x + d[0], y + d[1], max(1.0, w + d[2]), max(1.0, h + d[3])], "score": float(rng.random())})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}, {"id": 7, "name": "c"}]}
    return gt, ([] if no_results else results)


@pytest.mark.parametrize("seed,crowd,empty,no_results,subset", [
    (0, False, 0, False, False), (1, True, 5, False, False), (2, True, 10, False, True), (3, True, 3, True, False)])
def test_faster_coco_eval_gives_pycocotools_numbers(seed, crowd, empty, no_results, subset):
    gt, results = _random_case(seed, crowd, empty, no_results)
    ids = [im["id"] for im in gt["images"]][::3] if subset else None  # only the images a rank saw
    ref, _ = evaluate_results(gt, results, ids, backend="pycocotools")
    fast, _ = evaluate_results(gt, results, ids, backend="faster")
    for k in SUMMARY_KEYS:
        assert (math.isnan(ref[k]) and math.isnan(fast[k])) or fast[k] == pytest.approx(ref[k], abs=1e-12), k
    assert fast["AP_per_class"] == pytest.approx(ref["AP_per_class"], abs=1e-12)
    assert no_results or ref["mAP"] > 0.01  # not a trivially-zero comparison


def test_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="'cocoapi'.*faster.*pycocotools"):
        CocoEvaluator(GT, LABEL_TO_CAT, backend="cocoapi")
