"""Reading a COCO file's annotations into the flat arrays ``CocoDetection`` holds (``data/packed.py`` says why):
with array operations where the file has nothing to report (a COCO-size file in seconds), one by one where it has,
so that each message names its entry. Both keep exactly the same (tested)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .images import DataError

__all__ = ["AnnotationReader"]


class _Kept:
    """The annotations kept while a file is read, column by column (made into arrays by ``CocoDetection._store``)."""

    def __init__(self, images: list[dict]) -> None:
        self.image, self.box, self.label, self.crowd, self.area, self.ann_id = [], [], [], [], [], []
        # while reading only (plain Python: the fastest per-annotation lookups): image id -> position, sizes
        self.index = {im["id"]: k for k, im in enumerate(images)}
        self.sizes = [(float(im["width"]), float(im["height"])) if "width" in im and "height" in im else (-1.0, -1.0)
                      for im in images]

    def add(self, image: int, box, label: int, crowd: bool, area: float, ann_id: int) -> None:
        self.image.append(image)
        self.box.append(box)
        self.label.append(label)
        self.crowd.append(crowd)
        self.area.append(area)
        self.ann_id.append(ann_id)


class AnnotationReader:
    """``CocoDetection``'s reading of annotations (a mixin: it reads the data set's ``images``, labels, tolerance
    and ``on_bad``, and writes its ``ann_*`` arrays and ``problems``)."""

    def _store(self, kept: "_Kept", num_images: int) -> None:
        order = np.argsort(np.asarray(kept.image, dtype=np.int64), kind="stable")
        image = np.asarray(kept.image, dtype=np.int64)[order]
        self.ann_boxes = np.asarray(kept.box, dtype=np.float32).reshape(-1, 4)[order]  # xyxy, clipped
        self.ann_labels = np.asarray(kept.label, dtype=np.int64)[order]
        self.ann_crowd = np.asarray(kept.crowd, dtype=bool)[order]
        self.ann_area = np.asarray(kept.area, dtype=np.float64)[order]  # the file's area (COCO's size ranges read it)
        self.ann_ids = np.asarray(kept.ann_id, dtype=np.int64)[order]
        self.ann_offsets = np.searchsorted(image, np.arange(num_images + 1)).astype(np.int64)

    def _read_fast(self, anns: list, kept: "_Kept") -> bool:
        """Validate and keep every annotation with array operations (a COCO-size file in seconds); False, having
        kept nothing, when the file has anything the one-by-one reading (``_add_annotation``) must word: a malformed
        entry, an unknown image or category id, a box past its image's border. Degenerate boxes are dropped and
        counted here as there."""
        n = len(anns)
        if n == 0:
            return True
        try:
            image_ids = np.array([a["image_id"] for a in anns])
            cat_ids = np.array([a["category_id"] for a in anns])
            box = np.array([a["bbox"] for a in anns])  # no dtype: a string or None among the numbers shows in its kind
        except (TypeError, KeyError, ValueError, IndexError):
            return False
        if image_ids.dtype.kind != "i" or cat_ids.dtype.kind != "i" or box.shape != (n, 4) or box.dtype.kind not in "fi":
            return False
        box = box.astype(np.float64)
        if not np.isfinite(box).all():
            return False
        known = np.fromiter(kept.index, dtype=np.int64, count=len(kept.index))  # image ids, in file order
        order = np.argsort(known)
        j = np.minimum(np.searchsorted(known[order], image_ids), len(known) - 1)
        pos = order[j]  # each annotation's image position in the file
        if not (known[pos] == image_ids).all():
            return False
        cats = np.array(sorted(self.cat_id_to_label), dtype=np.int64)
        c = np.minimum(np.searchsorted(cats, cat_ids), len(cats) - 1)
        if not (cats[c] == cat_ids).all():
            return False
        labels = np.array([self.cat_id_to_label[int(v)] for v in cats], dtype=np.int64)[c]
        x, y, w, h = box.T
        sizes = np.array(kept.sizes, dtype=np.float64).reshape(-1, 2)[pos]
        W, H = sizes[:, 0], sizes[:, 1]
        has = W >= 0
        degenerate = (w <= 0) | (h <= 0)
        tol = self.box_tolerance_px
        outside = has & ~degenerate & ((x < -tol) | (y < -tol) | (x + w > W + tol) | (y + h > H + tol))
        if outside.any():
            return False
        x0, y0 = np.where(has, np.clip(x, 0, np.maximum(W, 0)), x), np.where(has, np.clip(y, 0, np.maximum(H, 0)), y)
        x1 = np.where(has, np.clip(x + w, 0, np.maximum(W, 0)), x + w)
        y1 = np.where(has, np.clip(y + h, 0, np.maximum(H, 0)), y + h)
        empty_inside = has & ~degenerate & ((x1 - x0 <= 0) | (y1 - y0 <= 0))
        for i in np.flatnonzero(degenerate | empty_inside).tolist():
            why = "" if degenerate[i] else " has no area inside the image"
            self._problem("degenerate box", f"annotations[{i}] (id {anns[i].get('id', '?')}) of image "
                          f"{self.images.file_name(int(pos[i]))}: bbox {anns[i]['bbox']}{why}")
        keep = ~(degenerate | empty_inside)
        area = np.array([a["area"] if isinstance(a.get("area"), (int, float)) else np.nan for a in anns], dtype=np.float64)
        area = np.where(np.isnan(area), (x1 - x0) * (y1 - y0), area)
        kept.image = pos[keep]
        kept.box = np.stack([x0, y0, x1, y1], 1)[keep]
        kept.label = labels[keep]
        kept.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)[keep]
        kept.area = area[keep]
        kept.ann_id = np.array([a.get("id", -1 - i) for i, a in enumerate(anns)], dtype=np.int64)[keep]
        return True

    def _problem(self, kind: str, detail: str) -> None:
        self.problems[kind] += 1
        self._examples.setdefault(kind, detail)

    def _bad(self, kind: str, detail: str, fix: str) -> None:
        """An error naming the file and the entry, or (``on_bad="warn"``) a counted drop."""
        if self.on_bad == "error":
            raise DataError(f"{self.ann_file}: {detail}. {fix}")
        self._problem(kind, detail)

    def _add_annotation(self, i: int, ann: Any, kept: "_Kept") -> None:
        where = f"annotations[{i}] (id {ann.get('id', '?')})" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann):
            return self._bad("malformed annotation", f"{where} needs image_id, category_id and bbox: {str(ann)[:200]}",
                             "Fix the annotation file.")
        k = kept.index.get(ann["image_id"]) if isinstance(ann["image_id"], (int, float, str)) else None
        if k is None:
            return self._bad("unknown image id", f"{where} refers to image id {ann['image_id']}, which is not in 'images'",
                             "Fix the annotation file or set data.on_bad=warn to drop it.")
        if ann["category_id"] not in self.cat_id_to_label:
            return self._bad("unknown category id", f"{where} of image {self.images.file_name(k)} has category_id "
                             f"{ann['category_id']}, not in 'categories' {self.cat_ids}",
                             "Add the category or fix the id (or data.on_bad=warn to drop it).")
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            return self._bad("malformed bbox", f"{where} of image {self.images.file_name(k)} has bbox {bbox!r}; expected "
                             "[x, y, width, height]", "Fix the annotation file.")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:  # degenerate: common in real sets, never a target
            self._problem("degenerate box", f"{where} of image {self.images.file_name(k)}: bbox {bbox}")
            return None
        W, H = kept.sizes[k]
        if W >= 0:
            tol = self.box_tolerance_px
            if x < -tol or y < -tol or x + w > W + tol or y + h > H + tol:
                self._bad("box outside the image", f"{where} of image {self.images.file_name(k)} (id {ann['image_id']}): "
                          f"bbox [x, y, w, h] = {bbox} extends outside the {W:g}x{H:g} image",
                          f"Fix the box or the image size (tolerance {tol} px), or set data.on_bad=warn to clip it")
            x0, y0 = min(max(x, 0.0), W), min(max(y, 0.0), H)
            x1, y1 = min(max(x + w, 0.0), W), min(max(y + h, 0.0), H)
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                self._problem("degenerate box", f"{where} of image {self.images.file_name(k)}: bbox {bbox} has no area inside the image")
                return None
        else:
            x0, y0, x1, y1 = x, y, x + w, y + h
        kept.add(k, (x0, y0, x1, y1), self.cat_id_to_label[ann["category_id"]], bool(ann.get("iscrowd", 0)),
                 float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else (x1 - x0) * (y1 - y0),
                 int(ann.get("id", -1 - i)))
        return None
