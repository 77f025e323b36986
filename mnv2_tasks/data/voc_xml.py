"""Pascal VOC XML boxes (``Annotations/*.xml``, 1-based pixels, ``difficult``) read into COCO form and written from it;
see ``det_formats``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from .det_formats import DetSet, _categories, _image_ids, _link_or_copy, _num, image_size_of
from .images import DataError

__all__ = ["read_voc", "write_voc"]


def _voc_class_list(root: Path) -> list[str] | None:
    """``labelmap.txt`` (``name:color:parts:actions`` per line, CVAT / Datumaro): its names, background left out."""
    f = root / "labelmap.txt"
    if not f.is_file():
        return None
    names = [line.split(":")[0].strip() for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [n for n in names if n and n != "background"]


def _text(node, tag: str, where: str) -> str:
    el = node.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise DataError(f"{where}: <{tag}> missing; a VOC annotation needs it")
    return el.text.strip()


def _voc_objects(xml: Path) -> tuple[dict, list[dict]]:
    try:
        tree = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise DataError(f"{xml}: not valid XML ({e}); fix or remove the file") from None
    head = {"filename": (tree.findtext("filename") or "").strip()}
    size = tree.find("size")
    if size is not None:
        try:
            head["width"], head["height"] = int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0))
        except ValueError:
            raise DataError(f"{xml}: <size> width/height are not numbers") from None
    objs = []
    for k, obj in enumerate(tree.findall("object")):
        where = f"{xml}: object {k + 1}"
        name = _text(obj, "name", where)
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where} ({name}): <bndbox> missing")
        try:
            xmin, ymin, xmax, ymax = (float(_text(box, t, where)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DataError(f"{where} ({name}): <bndbox> coordinates are not numbers") from None
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        objs.append({"name": name, "box": (xmin, ymin, xmax, ymax), "difficult": difficult, "where": where})
    return head, objs


def read_voc(root: str | Path, split: str = "train", class_names: list[str] | None = None, image_ext: str = ".jpg",
             on_bad: str = "error") -> DetSet:
    """One split (``ImageSets/Main/<split>.txt``) in COCO form. ``class_names``: the label order (default:
    ``labelmap.txt``, else the names found, sorted)."""
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: the {split} split's list of image ids is missing; data=voc_det needs data.root="
                        "<the VOC folder with Annotations/, JPEGImages/, ImageSets/Main/> (VOCdevkit/VOC2012)")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{listing}: no image ids listed")
    read = []
    for stem in ids:
        xml = root / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            raise DataError(f"{xml}: annotation missing for id {stem} listed in {listing}; add it or remove the id")
        head, objs = _voc_objects(xml)
        read.append((stem, xml, head, objs))
    names = class_names or _voc_class_list(root) or sorted({o["name"] for *_, objs in read for o in objs})
    if not names:
        raise DataError(f"{listing}: no object in any annotation and no labelmap.txt; no class to learn")
    index = {n: i + 1 for i, n in enumerate(names)}
    problems: Counter = Counter()
    files = [head["filename"] or f"{stem}{image_ext}" for stem, _, head, _ in read]
    img_dir = root / "JPEGImages"
    image_ids = _image_ids(files)
    images, anns = [], []
    for (stem, xml, head, objs), fname, iid in zip(read, files, image_ids):
        w, h = head.get("width", 0), head.get("height", 0)
        if not (w and h):  # some tools leave <size> at 0: the image says
            w, h = image_size_of(img_dir / fname)
        images.append({"id": iid, "file_name": fname, "width": w, "height": h})
        for o in objs:
            if o["name"] not in index:
                if on_bad == "error":
                    raise DataError(f"{o['where']}: class {o['name']!r} is not in the class list {names}; add it "
                                    "(data.class_names or labelmap.txt), or set data.on_bad=warn to drop it")
                problems[f"objects of unlisted classes dropped ({o['name']})"] += 1
                continue
            xmin, ymin, xmax, ymax = o["box"]
            x0, y0 = xmin - 1.0, ymin - 1.0  # 1-based pixel indices: the box covers pixels xmin..xmax
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": index[o["name"]],
                         "bbox": [x0, y0, xmax - x0, ymax - y0], "area": (xmax - x0) * (ymax - y0),
                         "iscrowd": int(o["difficult"])})
    coco = {"images": images, "annotations": anns, "categories": _categories(names)}
    return DetSet(coco, img_dir, listing, problems)


def write_voc(ds: DetSet, out: str | Path, split: str, copy_images: bool = True) -> Path:
    """``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` and ``labelmap.txt`` under ``out``; crowd
    regions become ``difficult`` objects. Returns the split list's path."""
    out = Path(out)
    cats = sorted(ds.coco["categories"], key=lambda c: c["id"])
    name_of = {c["id"]: str(c["name"]) for c in cats}
    labelmap = out / "labelmap.txt"
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"] + [f"{n}:::" for n in name_of.values()]
    if labelmap.is_file() and _voc_class_list(out) != list(name_of.values()):
        raise DataError(f"{labelmap}: its classes {_voc_class_list(out)} are not this split's {list(name_of.values())}; "
                        "write to another folder")
    out.mkdir(parents=True, exist_ok=True)
    labelmap.write_text("\n".join(lines) + "\n")
    by_image: dict = {}
    for a in ds.coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    stems = [Path(im["file_name"]).stem for im in ds.coco["images"]]
    dup = [s for s, n in Counter(stems).items() if n > 1]
    if dup:
        raise DataError(f"{ds.source}: file names {dup[:5]} repeat in other folders; VOC keeps every image in one "
                        "JPEGImages/ folder by its stem: rename them first")
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    for im, stem in zip(ds.coco["images"], stems):
        fname = Path(im["file_name"]).name
        if copy_images:
            _link_or_copy(ds.img_dir / im["file_name"], out / "JPEGImages" / fname)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = fname
        size = ET.SubElement(root, "size")
        for tag, v in (("width", im["width"]), ("height", im["height"]), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(v))
        for a in by_image.get(im["id"], []):
            x, y, w, h = (float(v) for v in a["bbox"])
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = name_of[a["category_id"]]
            ET.SubElement(obj, "difficult").text = "1" if a.get("iscrowd") else "0"
            box = ET.SubElement(obj, "bndbox")
            for tag, v in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
                ET.SubElement(box, tag).text = _num(v)
        ET.indent(root)
        ET.ElementTree(root).write(out / "Annotations" / f"{stem}.xml", encoding="unicode")
    listing = out / "ImageSets" / "Main" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(stems) + "\n")
    return listing
