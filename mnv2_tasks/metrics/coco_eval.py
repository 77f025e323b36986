"""COCO box evaluation, shared by training, ``tools/eval.py`` and ONNX runners.

Two backends give the same 12 numbers: ``faster`` (faster-coco-eval's C++ ``COCOeval_faster``, the default: several
times faster on COCO-size sets) and ``pycocotools`` (the reference). ``tests/test_coco_eval.py`` holds them equal on
crowd, empty and unmatched cases; ``mnv2-benchmark --task coco-eval`` times both on a val2017-size set.

``CocoEvaluator.update(preds, metas)`` maps detections from model-input pixels back to the original
image and from contiguous labels back to COCO category ids; ``compute()`` gathers every DDP rank's
results, runs ``COCOeval`` on the images seen, and returns the 12-number summary
(``mAP, mAP50, mAP75, mAP_small, mAP_medium, mAP_large, AR1, AR10, AR100, AR_small, AR_medium,
AR_large``). ``write_results`` saves the COCO results JSON (xywh, original ids) that reproduces them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["CocoEvaluator", "SUMMARY_KEYS", "BACKENDS", "evaluate_results", "to_coco_results", "xyxy_to_xywh"]

BACKENDS = ("faster", "pycocotools")

SUMMARY_KEYS = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _api(backend: str):
    """``(COCO, COCOeval)`` of a backend."""
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        def cocoeval(gt, dt, iou_type):
            return COCOeval_faster(gt, dt, iou_type, print_function=print)  # print: captured like pycocotools'

        return COCO, cocoeval
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise ValueError(f"COCO evaluation backend {backend!r}: choose one of {BACKENDS}")


def _load_gt(ann_file: str | Path | dict, backend: str = "faster"):
    """A ``COCO`` of the ground truth (``backend``'s class); ``area`` and ``iscrowd`` filled in where a file lacks them."""
    COCO = _api(backend)[0]
    data = copy.deepcopy(ann_file) if isinstance(ann_file, dict) else json.loads(Path(ann_file).read_text())
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    coco.mnv2_backend = backend
    return coco


def boxes_to_original(boxes, input_size: Sequence[int], orig_size: Sequence[int]) -> np.ndarray:
    """(M, 4) xyxy boxes in the network input's pixels -> float32 (M, 4) in the original image's pixels
    (scaled and clipped). The one mapping that evaluation (COCO results) and inference (``Predictor``) both use."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    orig_h, orig_w = (int(v) for v in orig_size)
    in_h, in_w = (int(v) for v in input_size)
    boxes = boxes * np.array([orig_w / in_w, orig_h / in_h, orig_w / in_w, orig_h / in_h], dtype=np.float32)
    np.clip(boxes, 0, [orig_w, orig_h, orig_w, orig_h], out=boxes)
    return boxes


def xyxy_to_xywh(boxes) -> np.ndarray:
    """(M, 4) xyxy -> COCO's xywh, in float64 (what a results file records: evaluation's and ``tools/predict.py --json``'s)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


def to_coco_results(pred: dict, meta: dict, label_to_cat_id: Sequence[int]) -> list[dict]:
    """One image's detections (xyxy in input pixels, contiguous labels) -> COCO results (xywh, original size and ids)."""
    if torch.as_tensor(pred["boxes"]).numel() == 0:
        return []
    scores = torch.as_tensor(pred["scores"]).detach().float().cpu().reshape(-1)
    labels = torch.as_tensor(pred["labels"]).detach().cpu().reshape(-1).long()
    xywh = xyxy_to_xywh(boxes_to_original(pred["boxes"], meta.get("input_size", meta["orig_size"]), meta["orig_size"])).tolist()
    image_id = meta["image_id"]
    image_id = image_id.item() if hasattr(image_id, "item") else image_id
    return [
        {"image_id": image_id, "category_id": int(label_to_cat_id[lab]), "bbox": box, "score": float(s)}
        for box, s, lab in zip(xywh, scores.tolist(), labels.tolist())
    ]


def evaluate_results(coco_gt, results: list[dict], image_ids: Sequence | None = None,
                     backend: str = "faster") -> tuple[dict, str]:
    """Run ``COCOeval`` (bbox) on ``results`` against ``coco_gt`` (a ``COCO`` from ``_load_gt``, a path or a dict).

    ``image_ids`` restricts the evaluation (default: every image of the ground truth). Returns the
    summary dict (``SUMMARY_KEYS``; COCOeval's -1 for "no such ground truth" becomes NaN) and the
    printed 12-line summary. ``backend``: ``faster`` or ``pycocotools`` (module docstring).
    """
    COCO, COCOeval = _api(backend)
    if getattr(coco_gt, "mnv2_backend", None) != backend:
        coco_gt = _load_gt(coco_gt.dataset if hasattr(coco_gt, "dataset") else coco_gt, backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes refuses an empty list; no detections is a valid (zero) answer
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
            coco_dt.createIndex()
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(image_ids)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats]
    metrics: dict = {k: (v if v >= 0 else float("nan")) for k, v in zip(SUMMARY_KEYS, stats)}
    metrics["AP_per_class"] = per_class_ap(ev)
    return metrics, text.getvalue()


def per_class_ap(ev) -> dict[str, float | None]:
    """AP@[.5:.95] of every category (all areas, 100 detections), keyed by category name, from COCOeval's
    accumulated precision array (T x R x K x A x M); ``None`` for a category without ground truth."""
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T IoU thresholds, R recall points, K categories)
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        name = str(ev.cocoGt.cats.get(cat_id, {}).get("name", cat_id))
        out[name] = float(p[p > -1].mean()) if (p > -1).any() else None
    return out


class CocoEvaluator:
    """Accumulates detections over an evaluation pass and scores them with pycocotools.

    Args:
        ann_file: the ground truth (COCO instances JSON path, or the loaded dict).
        label_to_cat_id: category id of every contiguous label (index 0, the background, unused).
    """

    def __init__(self, ann_file: str | Path | dict, label_to_cat_id: Sequence[int], backend: str = "faster") -> None:
        _api(backend)  # an unknown or missing backend fails here, before the first epoch
        self.ann_file = ann_file
        self.label_to_cat_id = list(label_to_cat_id)
        self.backend = backend
        self._coco_gt = None
        self.reset()

    @property
    def coco_gt(self):
        if self._coco_gt is None:
            self._coco_gt = _load_gt(self.ann_file, self.backend)
        return self._coco_gt

    def reset(self) -> None:
        self.results: list[dict] = []
        self.image_ids: set = set()

    def update(self, preds: list[dict], metas: list[dict]) -> None:
        """``preds``: one ``{"boxes" xyxy input pixels, "scores", "labels"}`` per image; ``metas``: the batch's meta."""
        if len(preds) != len(metas):
            raise ValueError(f"{len(preds)} predictions for {len(metas)} images")
        for pred, meta in zip(preds, metas):
            image_id = meta["image_id"]
            self.image_ids.add(image_id.item() if hasattr(image_id, "item") else image_id)
            self.results.extend(to_coco_results(pred, meta, self.label_to_cat_id))

    def _gather(self) -> tuple[list[dict], set]:
        """Every rank's results and image ids, on rank 0 only (DDP: ``gather_object``; the other ranks get nothing)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.results, self.image_ids
        rank = dist.get_rank()
        gathered: list | None = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object((self.results, sorted(self.image_ids)), gathered, dst=0)
        results, ids = [], set()
        for r, i in gathered or []:
            results.extend(r)
            ids.update(i)
        return results, ids

    def compute(self, results_path: str | Path | None = None) -> dict:
        """The summary over everything seen since ``reset`` (on every rank), with ``num_images`` and
        ``num_detections``; the gathered results are written to ``results_path`` (rank 0) when given."""
        results, image_ids = self._gather()
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank = dist.get_rank() if distributed else 0
        payload = [None]
        if rank == 0:
            results.sort(key=lambda r: (str(r["image_id"]), -r["score"]))
            if not image_ids:
                metrics = {k: float("nan") for k in SUMMARY_KEYS}
                text = "no images evaluated"
            else:
                metrics, text = evaluate_results(self.coco_gt, results, image_ids, self.backend)
            log.info("COCO bbox evaluation of %d images, %d detections:\n%s", len(image_ids), len(results), text.rstrip())
            metrics.update(num_images=len(image_ids), num_detections=len(results))
            if results_path is not None:
                Path(results_path).parent.mkdir(parents=True, exist_ok=True)
                Path(results_path).write_text(json.dumps(results))
            payload = [metrics]
        if distributed:
            dist.broadcast_object_list(payload, src=0)
        return dict(payload[0])


def _main() -> None:  # pragma: no cover - command line
    import argparse

    p = argparse.ArgumentParser(description="Re-run pycocotools on a results file (e.g. val_predictions.json).")
    p.add_argument("ann_file")
    p.add_argument("results")
    p.add_argument("--backend", choices=BACKENDS, default="faster")
    a = p.parse_args()
    results = json.loads(Path(a.results).read_text())
    metrics, text = evaluate_results(a.ann_file, results, backend=a.backend)
    print(text)
    print(json.dumps({k: (None if np.isnan(v) else v) for k, v in metrics.items()}))


if __name__ == "__main__":
    _main()
