"""``mnv2-convert``: a detection set from any of COCO / YOLO / VOC XML to any other, with a summary.

    mnv2-convert coco_root yolo_out --to yolo --splits train val
    mnv2-convert my_yolo voc_out --to voc                    # the source format is detected
    mnv2-convert voc_root coco_out --to coco --splits trainval
    mnv2-convert coco_root out --to coco --drop-crowd        # the same set without its crowd regions

Boxes round-trip to 1e-3 px, as tested (YOLO: 10 significant digits; VOC: 4 decimals, 1-based), class names and their order
are kept (YOLO's data.yaml also keeps COCO's category ids), and image ids are kept where file names are numbers.
Crowd regions become VOC ``difficult`` objects; YOLO has no such field, so they are dropped and counted. Images are
hard-linked where the file system allows, else copied.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .det_formats import DetSet, read_coco, write_coco
from .images import DataError
from .voc_xml import read_voc, write_voc
from .yolo_labels import read_yolo, write_yolo

__all__ = ["convert", "main", "read_any", "detect_format", "summary", "FORMATS"]

FORMATS = ("coco", "yolo", "voc")


def detect_format(root: str | Path) -> str:
    """``yolo`` (a data.yaml), ``voc`` (Annotations/ + ImageSets/), ``coco`` (annotations/*.json)."""
    root = Path(root)
    if root.suffix in (".yaml", ".yml") or (root / "data.yaml").is_file():
        return "yolo"
    if (root / "Annotations").is_dir() and (root / "ImageSets").is_dir():
        return "voc"
    if root.suffix == ".json" or any((root / "annotations").glob("*.json")):
        return "coco"
    raise DataError(f"{root}: not a COCO (annotations/*.json), YOLO (data.yaml) or VOC (Annotations/, ImageSets/) "
                    "folder; name the format with --from")


def read_any(fmt: str, root: str | Path, split: str, ann_file: str | None = None, img_dir: str | None = None,
             on_bad: str = "error") -> DetSet:
    """A split of any format. COCO: ``ann_file`` / ``img_dir`` (default ``annotations/instances_<split>.json`` and
    ``<split>/`` under ``root``)."""
    root = Path(root)
    if fmt == "coco":
        af = Path(ann_file.format(split=split)) if ann_file else root / "annotations" / f"instances_{split}.json"
        im = Path(img_dir.format(split=split)) if img_dir else root / split
        return read_coco(af if af.is_absolute() else root / af, im if im.is_absolute() else root / im)
    if fmt == "yolo":
        return read_yolo(root, split, on_bad)
    if fmt == "voc":
        return read_voc(root, split, on_bad=on_bad)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}


def drop_crowd(ds: DetSet) -> DetSet:
    n = sum(1 for a in ds.coco["annotations"] if a.get("iscrowd"))
    if n:
        ds.coco = {**ds.coco, "annotations": [a for a in ds.coco["annotations"] if not a.get("iscrowd")]}
        ds.problems["crowd regions dropped (--drop-crowd)"] += n
    return ds


def summary(ds: DetSet) -> str:
    """Images, boxes per class, crowd / difficult regions, negatives and the problems found, as lines."""
    name_of = {c["id"]: str(c["name"]) for c in ds.coco["categories"]}
    per = Counter(name_of.get(a["category_id"], a["category_id"]) for a in ds.coco["annotations"] if not a.get("iscrowd"))
    crowd = sum(1 for a in ds.coco["annotations"] if a.get("iscrowd"))
    with_boxes = {a["image_id"] for a in ds.coco["annotations"]}
    negatives = sum(1 for im in ds.coco["images"] if im["id"] not in with_boxes)
    lines = [f"{ds.source}: {len(ds.coco['images'])} images, {sum(per.values())} boxes, {crowd} crowd/difficult, "
             f"{negatives} negatives (no box)"]
    lines += [f"  {n:<20} {per.get(n, 0)}" for n in name_of.values()]
    lines += [f"  problem: {v} x {k}" for k, v in ds.problems.items()] or ["  problems: none"]
    return "\n".join(lines)


def convert(src: str | Path, out: str | Path, to: str, splits=("train", "val"), fmt: str = "auto",
            ann_file: str | None = None, img_dir: str | None = None, no_crowd: bool = False, copy_images: bool = True,
            on_bad: str = "error") -> list[DetSet]:
    """Read each split of ``src`` and write it to ``out`` in format ``to``; returns the sets read (``problems`` include
    what writing dropped)."""
    if to not in WRITERS:
        raise ValueError(f"--to must be one of {FORMATS}, got {to!r}")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if Path(out).resolve() == Path(src).resolve():
        raise DataError(f"{out}: the output folder is the source; write elsewhere")
    done = []
    for split in splits:
        ds = read_any(fmt, src, split, ann_file=ann_file, img_dir=img_dir, on_bad=on_bad)
        if no_crowd:
            drop_crowd(ds)
        WRITERS[to](ds, out, split, copy_images=copy_images)
        done.append(ds)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mnv2-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="the set: a COCO root (annotations/instances_<split>.json, <split>/), a folder with "
                               "data.yaml (YOLO) or a VOC folder (Annotations/, JPEGImages/, ImageSets/Main/)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--from", dest="fmt", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.add_argument("--coco-ann", default=None, help="COCO source: the annotation file, {split} filled in "
                                                     "(default annotations/instances_{split}.json)")
    p.add_argument("--coco-images", default=None, help="COCO source: the image folder, {split} filled in (default {split})")
    p.add_argument("--drop-crowd", action="store_true", help="leave crowd / difficult regions out")
    p.add_argument("--no-images", action="store_true", help="write the labels only")
    p.add_argument("--on-bad", choices=("error", "warn"), default="error", help="a bad label line: stop (default) or drop it, counted")
    a = p.parse_args(argv)
    try:
        sets = convert(a.src, a.out, a.to, a.splits, a.fmt, a.coco_ann, a.coco_images, a.drop_crowd, not a.no_images, a.on_bad)
    except DataError as e:
        print(f"mnv2-convert: {e}", file=sys.stderr)
        return 2
    for split, ds in zip(a.splits, sets):
        print(f"[{split}] {summary(ds)}")
    print(f"written: {a.out} ({a.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
