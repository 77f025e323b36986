"""Detection labels in the three formats users bring, read into one form and written back out.

- **COCO** instances JSON (``images``, ``annotations``, ``categories``; boxes ``[x, y, w, h]`` in pixels).
- **Ultralytics YOLO**: a ``data.yaml`` (``path``, ``train``/``val``: image folders, lists of them or ``.txt`` lists of
  images; ``names``: a list or ``{index: name}``), one ``labels/.../<stem>.txt`` per image with normalised
  ``class cx cy w h`` lines (or ``class x1 y1 x2 y2 ...`` polygons: their bounding box). The label of
  ``.../images/.../a.jpg`` is ``.../labels/.../a.txt`` (the last ``images`` folder of the path replaced, as Ultralytics
  does), so both ``images/train`` + ``labels/train`` and ``train/images`` + ``train/labels`` layouts are read. An image
  without a label file is a negative. YOLO has no crowd field: crowd regions are dropped on writing, counted.
- **Pascal VOC XML**: ``Annotations/<id>.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``; pixel coordinates
  1-based as the devkit and Detectron2 read them (COCO ``x = xmin - 1``, ``x + w = xmax``); ``difficult`` objects are
  COCO crowd regions (neither targets nor misses). The class list is ``labelmap.txt`` (CVAT / Datumaro's VOC export)
  when present, else the names found in the split, sorted (VOC's own 20 classes are in alphabetical order).

The readers and writers: ``read_coco``/``write_coco`` here, ``yolo_labels``, ``voc_xml``; any to any: ``convert``.
Every reader returns a ``DetSet``: a COCO instances dict (file names relative to ``img_dir``) that
``CocoDetection`` reads and evaluation scores against, so a sample and an mAP mean the same for every format.
Image ids: the file stem where every stem is a number (COCO's and the embedded set's names), else 1..N in path
order. Sizes are the displayed image's (EXIF orientation applied), as the decoder reads it.

Errors name the file (and the line or the object) and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .images import DataError, displayed_size

__all__ = ["DetSet", "read_coco", "write_coco", "image_size_of", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class DetSet:
    """One split of a detection set in COCO form: ``coco`` (file names relative to ``img_dir``), the file or folder it
    was read from (``source``, named in messages), and what was dropped or changed on the way (``problems``)."""

    coco: dict
    img_dir: Path
    source: Path
    problems: Counter = field(default_factory=Counter)

    @property
    def class_names(self) -> list[str]:
        return [str(c["name"]) for c in sorted(self.coco["categories"], key=lambda c: c["id"])]


# ---- small helpers ------------------------------------------------------------------------------------------------


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) of the image as displayed (EXIF orientation applied), from its header only."""
    try:
        with Image.open(path) as im:
            (w, h), _ = displayed_size(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image ({e}); replace or remove the file") from None
    return w, h


def _image_ids(rel_paths: list[str]) -> list[int]:
    """The file stems where all are distinct numbers (COCO's own names), else 1..N in the given order."""
    stems = [Path(p).stem for p in rel_paths]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(rel_paths) + 1))


def _num(v: float) -> str:
    """A coordinate written exactly enough (1e-4 px) and short: ``66`` not ``66.0000``."""
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _categories(names: list[str], ids: list[int] | None = None) -> list[dict]:
    ids = ids or list(range(1, len(names) + 1))
    return [{"id": int(i), "name": str(n)} for i, n in zip(ids, names)]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---- COCO ---------------------------------------------------------------------------------------------------------


def read_coco(ann_file: str | Path, img_dir: str | Path) -> DetSet:
    from .coco import load_coco_json

    return DetSet(load_coco_json(ann_file), Path(img_dir), Path(ann_file))


def write_coco(ds: DetSet, out: str | Path, split: str, copy_images: bool = True) -> Path:
    """``<out>/annotations/instances_<split>.json`` and the images in ``<out>/<split>/``; returns the JSON's path."""
    out = Path(out)
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    coco = {k: v for k, v in ds.coco.items()}
    anns = []
    for k, a in enumerate(ds.coco["annotations"]):
        x, y, w, h = (float(v) for v in a["bbox"])
        anns.append({"id": a.get("id", k + 1), "image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [x, y, w, h], "area": float(a.get("area", w * h)), "iscrowd": int(bool(a.get("iscrowd", 0))),
                     **({"segmentation": a["segmentation"]} if "segmentation" in a else {})})
    coco["annotations"] = anns
    if copy_images:
        for im in ds.coco["images"]:
            _link_or_copy(ds.img_dir / im["file_name"], out / split / im["file_name"])
    ann_file.write_text(json.dumps(coco))
    return ann_file
