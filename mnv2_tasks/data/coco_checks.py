"""Reading a COCO instances file (``load_coco_json``) and checking it for what corrupts metrics without a word
(``check_integrity``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .images import DataError

__all__ = ["check_integrity", "load_coco_json"]


def _ids(entries: list, key: str, what: str, ann_file: Path) -> list:
    """``entry[key]`` of every entry, refusing a missing one or one that is not an integer (a string id is a common
    export bug: pycocotools then matches nothing)."""
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or key not in e:
            raise DataError(f"{ann_file}: {what}[{i}] has no '{key}': {str(e)[:200]}")
        v = e[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{ann_file}: {what}[{i}] has {key} {v!r} ({type(v).__name__}); COCO ids are integers: "
                            "convert them in the annotation file")
        out.append(v)
    return out


def _repeated(values: list) -> list:
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    return twice


def check_integrity(data: dict, ann_file: Path, img_dir: Path) -> None:
    """What corrupts metrics without a word, refused naming the entries: repeated image, annotation or category ids
    (pycocotools then silently drops and duplicates objects), ids that are not integers, two categories with one name,
    one image file listed twice (also through a symlink), and a split with no images."""
    image_ids = _ids(data["images"], "id", "images", ann_file)
    if not image_ids:
        raise DataError(f"{ann_file}: 'images' is empty; the split has nothing to train or evaluate on")
    for what, ids in (("image", image_ids), ("category", _ids(data["categories"], "id", "categories", ann_file))):
        twice = _repeated(ids)
        if twice:
            raise DataError(f"{ann_file}: {what} id {twice[0]} appears more than once ({len(twice)} repeated {what} ids); "
                            f"every {what} needs its own id")
    ann_ids = [a["id"] for a in data["annotations"] if isinstance(a, dict) and "id" in a]
    _ids([a for a in data["annotations"] if isinstance(a, dict) and "id" in a], "id", "annotations", ann_file)
    twice = _repeated(ann_ids)
    if twice:
        raise DataError(f"{ann_file}: annotation id {twice[0]} appears more than once ({len(twice)} repeated annotation ids); "
                        "pycocotools keeps one object per id, so evaluation would drop and duplicate objects: give each its own id")
    names = [str(c.get("name", c["id"])) for c in data["categories"]]
    twice = _repeated(names)
    if twice:
        ids = [c["id"] for c in data["categories"] if str(c.get("name", c["id"])) == twice[0]]
        raise DataError(f"{ann_file}: categories {ids} share the name {twice[0]!r}; merge them or rename one")
    where: dict[str, int] = {}
    for im in data["images"]:
        if "file_name" not in im:
            continue
        real = os.path.realpath(img_dir / str(im["file_name"]))
        if real in where:
            raise DataError(f"{ann_file}: images {where[real]} and {im['id']} are the same file ({img_dir / im['file_name']}"
                            f"{'' if real == str(img_dir / im['file_name']) else f', through a link to {real}'}); "
                            "list each image once")
        where[real] = im["id"]


REQUIRED_KEYS = ("images", "annotations", "categories")


def load_coco_json(ann_file: str | Path) -> dict:
    """Read a COCO instances file, checking that it is JSON with ``images``, ``annotations`` and ``categories`` lists."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found; set data.root / the ann_file paths")
    try:
        data = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: not a JSON file ({e}); expected a COCO instances file") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: the JSON holds a {type(data).__name__}, expected a COCO object with keys {list(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"{ann_file}: missing key(s) {missing}; a COCO instances file needs {list(REQUIRED_KEYS)}")
    bad = [k for k in REQUIRED_KEYS if not isinstance(data[k], list)]
    if bad:
        raise DataError(f"{ann_file}: {bad} must be lists")
    return data
