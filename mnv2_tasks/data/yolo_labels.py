"""Ultralytics YOLO labels (``data.yaml`` + ``labels/*.txt``) read into COCO form and written from it; see ``det_formats``."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import yaml

from .det_formats import IMAGE_SUFFIXES, DetSet, _categories, _image_ids, _link_or_copy, image_size_of
from .images import DataError

__all__ = ["read_yolo", "write_yolo", "yolo_label_path"]


def _yolo_yaml(root: str | Path) -> Path:
    root = Path(root)
    path = root if root.suffix in (".yaml", ".yml") else root / "data.yaml"
    if not path.is_file():
        raise DataError(f"{path}: no YOLO data.yaml here; data=yolo needs data.root=<the folder of data.yaml> "
                        "(with 'train', 'val' and 'names', as Ultralytics writes it)")
    return path


def _yolo_names(spec: dict, yaml_path: Path) -> list[str]:
    names = spec.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except ValueError:
            raise DataError(f"{yaml_path}: 'names' keys must be class indices 0..K-1, got {list(names)[:5]}") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{yaml_path}: 'names' must number the classes 0..{len(keys) - 1} without gaps, got {keys}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{yaml_path}: 'names' must list the class names (a list, or {{0: name, ...}}), got {names!r}")
    nc = spec.get("nc")
    if nc is not None and int(nc) != len(names):
        raise DataError(f"{yaml_path}: nc: {nc} but 'names' lists {len(names)} classes; fix one of them")
    return [str(n) for n in names]


def _yolo_images(entry, base: Path, yaml_path: Path, split: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else base / p
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    images.append(f if f.is_absolute() else (p.parent / f if line.startswith("./") else base / f))
        else:
            raise DataError(f"{yaml_path}: {split}: {e} is neither an image folder nor a .txt list of images "
                            f"(looked for {p}); fix the path (relative to 'path': {base})")
    if not images:
        raise DataError(f"{yaml_path}: {split}: no images under {entries}; fix the '{split}' path")
    return images


def yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_yolo(root: str | Path, split: str = "train", on_bad: str = "error") -> DetSet:
    """One split (``train``, ``val`` or ``test`` of ``data.yaml``) in COCO form; bad label lines raise ``DataError``
    naming the file and line, or (``on_bad="warn"``) are dropped and counted."""
    yaml_path = _yolo_yaml(root)
    try:
        spec = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{yaml_path}: not valid YAML ({e})") from None
    names = _yolo_names(spec, yaml_path)
    base = Path(spec.get("path") or ".")
    base = base if base.is_absolute() else (yaml_path.parent / base).resolve()
    if split not in spec:
        raise DataError(f"{yaml_path}: no '{split}' entry (the {split} images); add '{split}: <image folder>'")
    images = _yolo_images(spec[split], base, yaml_path, split)
    rel = [os.path.relpath(p, base) for p in images]
    ids = _image_ids(rel)
    cat_ids = spec.get("coco_category_ids")  # written by write_yolo: the COCO ids the classes had, kept on a round trip
    if not (isinstance(cat_ids, list) and len(cat_ids) == len(names)):
        cat_ids = list(range(1, len(names) + 1))
    problems: Counter = Counter()
    coco_images, anns = [], []
    for path, r, iid in zip(images, rel, ids):
        w, h = image_size_of(path)
        coco_images.append({"id": iid, "file_name": r, "width": w, "height": h})
        label = yolo_label_path(path)
        if not label.is_file():
            continue  # a negative
        for n, line in enumerate(label.read_text().splitlines(), 1):
            vals = line.split()
            if not vals:
                continue
            where = f"{label}:{n}"
            try:
                cls, coords = int(vals[0]), [float(v) for v in vals[1:]]
            except ValueError:
                cls, coords = -1, []
            bad = None
            if cls < 0 or cls >= len(names):
                bad = f"class {vals[0]!r} is not one of 0..{len(names) - 1} ({yaml_path.name} 'names')"
            elif len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
                bad = f"{len(vals)} values; expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
            elif not all(math.isfinite(c) and -0.01 <= c <= 1.01 for c in coords):
                bad = "coordinates outside 0..1; YOLO labels are normalised by the image's width and height"
            if bad:
                if on_bad == "error":
                    raise DataError(f"{where}: {bad}: {line.strip()[:80]!r}. Fix the label, or set data.on_bad=warn to drop it")
                problems["bad label lines dropped"] += 1
                continue
            if len(coords) == 4:
                cx, cy, bw, bh = coords
                x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            else:
                xs, ys = coords[0::2], coords[1::2]
                x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            x0, x1 = max(0.0, x0) * w, min(1.0, x1) * w
            y0, y1 = max(0.0, y0) * h, min(1.0, y1) * h
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat_ids[cls],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    coco = {"images": coco_images, "annotations": anns, "categories": _categories(names, cat_ids)}
    return DetSet(coco, base, yaml_path, problems)


def write_yolo(ds: DetSet, out: str | Path, split: str, copy_images: bool = True) -> Path:
    """``<out>/images/<split>/`` and ``<out>/labels/<split>/`` with ``<out>/data.yaml`` (its ``names`` and this split
    added to what is there); crowd regions dropped and counted in ``ds.problems``. Returns data.yaml's path."""
    out = Path(out)
    yaml_path = out / "data.yaml"
    cats = sorted(ds.coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    spec = yaml.safe_load(yaml_path.read_text()) if yaml_path.is_file() else {}
    names = {i: str(c["name"]) for i, c in enumerate(cats)}
    if spec.get("names") not in (None, names):
        raise DataError(f"{yaml_path}: its names {spec['names']} are not this split's {names}; write to another folder")
    spec.update({"path": ".", split: f"images/{split}", "names": names, "nc": len(names),
                 "coco_category_ids": [int(c["id"]) for c in cats]})
    by_image: dict = {}
    for a in ds.coco["annotations"]:
        if a.get("iscrowd"):
            ds.problems["crowd regions dropped (YOLO has no crowd field)"] += 1
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    for im in ds.coco["images"]:
        rel = Path(im["file_name"])
        if copy_images:
            _link_or_copy(ds.img_dir / rel, out / "images" / split / rel)
        anns = by_image.get(im["id"])
        label = out / "labels" / split / rel.with_suffix(".txt")
        if label.exists():
            label.unlink()
        if not anns:
            continue  # a negative: no label file
        W, H = float(im["width"]), float(im["height"])
        lines = []
        for a in anns:
            x, y, w, h = (float(v) for v in a["bbox"])
            lines.append(f"{index[a['category_id']]} {(x + w / 2) / W:.10g} {(y + h / 2) / H:.10g} {w / W:.10g} {h / H:.10g}")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path
