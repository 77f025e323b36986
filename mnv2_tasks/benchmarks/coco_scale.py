"""COCO-size costs a cluster job pays before and around training, on synthetic annotation files of COCO's size.

    python -m mnv2_tasks.benchmarks.coco_scale --part data    # train2017-size: 118,287 images, 860,001 boxes
    python -m mnv2_tasks.benchmarks.coco_scale --part eval    # val2017-size: 5,000 images, 100 detections each

``data``: the time ``CocoDetection`` takes to read and index the file, the memory it keeps, and the private memory
each of two forked ``DataLoader`` workers adds by reading every sample's annotations (``load`` with the image read
replaced by a zero-cost array, so only annotation access counts; Private_Clean + Private_Dirty of
``/proc/<pid>/smaps_rollup``). ``eval``: ``evaluate_results`` with each backend in this one process, interleaved
over ``--rounds``, and the largest difference between their 12 numbers. The files are generated into a temporary
folder and deleted (``--keep DIR`` keeps them).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["make_instances", "make_detections", "measure_data", "measure_eval"]

# COCO's 80 category ids (1..90 with gaps)
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def make_instances(num_images: int, num_boxes: int, seed: int = 0) -> dict:
    """A COCO instances dict of this size with COCO's fields (polygons of 12 points, licences, urls)."""
    rng = np.random.default_rng(seed)
    wh = rng.choice([(640, 480), (480, 640), (640, 427), (500, 375)], num_images)
    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images.example/{i:012d}.jpg",
               "height": int(h), "width": int(w), "date_captured": "2013-11-14 16:28:13",
               "flickr_url": f"http://farm.example/{i}.jpg", "id": int(i)} for i, (w, h) in enumerate(wh.tolist(), start=1)]
    owner = np.sort(rng.integers(0, num_images, num_boxes))
    anns = []
    for n, k in enumerate(owner.tolist()):
        W, H = wh[k]
        w, h = float(rng.uniform(2, W / 2)), float(rng.uniform(2, H / 2))
        x, y = float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h))
        angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
        poly = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1).round(2).ravel().tolist()
        anns.append({"segmentation": [poly], "area": round(w * h * 0.7, 2), "iscrowd": int(rng.random() < 0.01),
                     "image_id": int(k + 1), "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                     "category_id": int(rng.choice(COCO_CAT_IDS)), "id": n + 1})
    cats = [{"supercategory": "thing", "id": c, "name": f"class{c}"} for c in COCO_CAT_IDS]
    return {"info": {"description": "synthetic, COCO-size"}, "licenses": [{"id": 1, "name": "x", "url": ""}],
            "images": images, "annotations": anns, "categories": cats}


def make_detections(gt: dict, per_image: int, seed: int = 1) -> list[dict]:
    """``per_image`` detections on every image: the ground truth jittered (hits at every IoU) and random boxes."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for im in gt["images"]:
        anns = by_image.get(im["id"], [])[:per_image // 2]
        for a in anns:
            x, y, w, h = a["bbox"]
            d = rng.normal(0, 0.1 * min(w, h), 4)
            out.append({"image_id": im["id"], "category_id": a["category_id"], "score": float(rng.random()),
                        "bbox": [x + d[0], y + d[1], max(1.0, w + d[2]), max(1.0, h + d[3])]})
        for _ in range(per_image - len(anns)):
            w, h = rng.uniform(4, im["width"] / 2), rng.uniform(4, im["height"] / 2)
            out.append({"image_id": im["id"], "category_id": int(rng.choice(COCO_CAT_IDS)), "score": float(rng.random()),
                        "bbox": [float(rng.uniform(0, im["width"] - w)), float(rng.uniform(0, im["height"] - h)), float(w), float(h)]})
    return out


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _private_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


class _Annotations:
    """A loader's data set that reads sample ``i``'s annotations as training does (``CocoDetection.load``)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        return len(self.ds.load(i)[1])


def measure_data(ann_file: Path, img_dir: Path, workers: int = 2) -> dict:
    """Index time, kept memory and the private memory each forked loader worker adds (module docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from ..data import coco

    h_w = {}
    real_read = coco.read_rgb

    def no_read(path):  # only annotation access is measured: a zero-cost image of the size the file says
        h, w = h_w.get(Path(path).name, (480, 640))
        return np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3))

    gc.collect()
    rss0, t0 = _rss_mb(), time.perf_counter()
    ds = coco.CocoDetection(ann_file, img_dir, check_files=False)
    index_s = time.perf_counter() - t0
    gc.collect()
    kept_mb = _rss_mb() - rss0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for im in json.loads(ann_file.read_text())["images"]:  # the sizes no_read returns (a dict of the benchmark's own)
        h_w[im["file_name"]] = (im["height"], im["width"])
    gc.collect()
    coco.read_rgb = no_read
    try:
        loader = DataLoader(_Annotations(ds), batch_size=512, num_workers=workers, persistent_workers=True,
                            collate_fn=sum, multiprocessing_context="fork")
        it = iter(loader)
        first = next(it)
        pids = [w.pid for w in it._workers]
        time.sleep(0.5)
        at_start = [_private_mb(p) for p in pids]
        t0 = time.perf_counter()
        boxes = first + sum(it)
        read_s = time.perf_counter() - t0
        after = [_private_mb(p) for p in pids]
        del it, loader
    finally:
        coco.read_rgb = real_read
    return {"images": len(ds), "boxes": int(len(ds.ann_labels)) if hasattr(ds, "ann_labels") else None,
            "index_s": round(index_s, 1), "kept_mb": round(kept_mb), "peak_rss_mb": round(peak_mb),
            "worker_private_at_start_mb": [round(v, 1) for v in at_start],
            "worker_private_after_mb": [round(v, 1) for v in after],
            "worker_added_mb": [round(b - a, 1) for a, b in zip(at_start, after)],
            "read_all_s": round(read_s, 1), "boxes_read": int(boxes), "torch": torch.__version__}


def measure_eval(gt: dict, results: list[dict], rounds: int = 1) -> dict:
    """Seconds per backend (median over interleaved rounds; ground truth indexing included) and their largest
    difference over the 12 numbers."""
    from ..metrics.coco_eval import BACKENDS, SUMMARY_KEYS, evaluate_results

    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    stats: dict[str, dict] = {}
    for _ in range(rounds):
        for b in BACKENDS:
            gc.collect()
            t0 = time.perf_counter()
            stats[b], _ = evaluate_results(gt, results, backend=b)
            times[b].append(time.perf_counter() - t0)
    ref = stats["pycocotools"]
    diff = max(abs(stats["faster"][k] - ref[k]) for k in SUMMARY_KEYS if not math.isnan(ref[k]))
    med = {b: statistics.median(t) for b, t in times.items()}
    return {"images": len(gt["images"]), "gt_boxes": len(gt["annotations"]), "detections": len(results),
            "seconds": {b: round(v, 1) for b, v in med.items()}, "all_seconds": times,
            "speedup_faster": round(med["pycocotools"] / med["faster"], 2), "max_abs_stat_diff": diff,
            "mAP": ref["mAP"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("data", "eval"), action="append", help="repeatable; default: both")
    p.add_argument("--images", type=int, default=118_287)
    p.add_argument("--boxes", type=int, default=860_001)
    p.add_argument("--val-images", type=int, default=5_000)
    p.add_argument("--val-boxes", type=int, default=36_781)
    p.add_argument("--detections", type=int, default=100, help="per validation image")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--keep", help="write the synthetic files here and keep them")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for part in a.part or ("data", "eval"):
            if part == "data":
                ann = root / "instances_train_synthetic.json"
                if not ann.is_file():
                    ann.write_text(json.dumps(make_instances(a.images, a.boxes)))
                out = measure_data(ann, root, a.workers)
            else:
                gt = make_instances(a.val_images, a.val_boxes, seed=5)
                out = measure_eval(gt, make_detections(gt, a.detections), a.rounds)
            print(json.dumps({"part": part, **out}), flush=True)


if __name__ == "__main__":
    main()
