"""The embedded default data set: deterministic synthetic "shapes" in real on-disk formats.

Nothing can be downloaded at run time, so every loader of the package is exercised on this:
COCO instances JSON (polygon and RLE masks, crowd regions, non-contiguous category ids,
empty images, overlapping and border-touching objects), VOC-style palette PNG masks, and an
ImageFolder tree. Generated once into a cache directory, then reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..launch import host_tag, once_per_node

log = logging.getLogger(__name__)

__all__ = ["SHAPE_CATEGORIES", "VOC_PALETTE", "ensure_shapes", "default_data_dir"]

VERSION = "shapes-v2"
# COCO categories: ids are non-contiguous on purpose, as in COCO itself.
SHAPE_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 12, "name": "star", "supercategory": "shape"},
]
_SHAPES = [c["name"] for c in SHAPE_CATEGORIES]


def _voc_palette() -> list[int]:
    """PASCAL VOC's colour map (bit-interleaved), 256 entries; 255 is drawn white-ish."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_PALETTE = _voc_palette()


def default_data_dir() -> Path:
    return Path(os.environ.get("MNV2_TASKS_DATA", Path.home() / ".cache" / "mnv2_tasks")) / VERSION


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "circle":
        n = 48
        return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]
    if kind == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2), math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
        return [(cx + r * x, cy + r * y) for x, y in pts]
    if kind == "triangle":
        return [(cx + r * math.cos(angle + 2 * math.pi * k / 3), cy + r * math.sin(angle + 2 * math.pi * k / 3)) for k in range(3)]
    if kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = angle + math.pi * k / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(kind)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random gradient plus noise, uint8 (H, W, 3)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = c0 * (1 - t) + c1 * t
    img = np.broadcast_to(img, (h, w, 3)) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _distinct_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> tuple[int, int, int]:
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if np.abs(c - bg_mean).sum() > 150:
            break
    return tuple(int(v) for v in c)


def _render_scene(rng: np.random.Generator, size: int, max_objects: int, empty: bool, crowd: bool):
    """Draw one scene. Returns image (H, W, 3) uint8, instance masks [(label_idx, bool mask)], crowd mask."""
    h = w = size
    img = Image.fromarray(_background(rng, h, w))
    bg_mean = np.asarray(img).reshape(-1, 3).mean(0)
    draw = ImageDraw.Draw(img)
    instances: list[tuple[int, np.ndarray]] = []
    occupancy = np.full((h, w), -1, dtype=np.int32)  # index of the visible instance per pixel
    n = 0 if empty else int(rng.integers(1, max_objects + 1))
    for i in range(n):
        kind = int(rng.integers(0, len(_SHAPES)))
        r = float(rng.uniform(0.08, 0.28) * size)
        # some objects straddle the border
        lo, hi = (-0.3 * r, size + 0.3 * r) if rng.random() < 0.2 else (r, size - r)
        cx, cy = rng.uniform(lo, hi, 2)
        poly = _shape_polygon(_SHAPES[kind], cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).polygon(poly, fill=1)
        mask = np.asarray(m, dtype=bool)
        if not mask.any():
            continue
        draw.polygon(poly, fill=_distinct_colour(rng, bg_mean))
        occupancy[mask] = len(instances)
        instances.append((kind, mask))
    crowd_mask = np.zeros((h, w), dtype=bool)
    if crowd:
        # a cluster of tiny dots, annotated as one crowd region (as COCO does for crowds)
        kind = 0
        cx, cy = rng.uniform(0.2 * size, 0.8 * size, 2)
        colour = _distinct_colour(rng, bg_mean)
        for _ in range(12):
            dx, dy = rng.normal(0, 0.06 * size, 2)
            rr = 0.015 * size + 1
            box = [cx + dx - rr, cy + dy - rr, cx + dx + rr, cy + dy + rr]
            draw.ellipse(box, fill=colour)
            m = Image.new("L", (w, h), 0)
            ImageDraw.Draw(m).ellipse(box, fill=1)
            dots = np.asarray(m, dtype=bool)
            crowd_mask |= dots
            occupancy[dots] = -2
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    visible = [(k, occupancy == j) for j, (k, _) in enumerate(instances)]
    return np.asarray(img), visible, crowd_mask


def _coco_segmentation(mask: np.ndarray, prefer_polygon: bool):
    """A polygon list when the mask is one simple region, else RLE (both are valid COCO)."""
    if prefer_polygon:
        import cv2

        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if len(polys) == 1:
            return polys
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _segmentation_area(seg, h: int, w: int) -> float:
    """Area as pycocotools computes it from the segmentation itself."""
    rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else [seg]
    return float(sum(mask_utils.area(rles if isinstance(rles, list) else [rles])))


def _write_split(root: Path, split: str, num_images: int, size: int, seed: int, first_id: int) -> list[str]:
    rng = np.random.default_rng(seed)
    coco_dir = root / "coco"
    (coco_dir / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    stems = []
    ann_id = first_id * 100
    for i in tqdm(range(num_images), desc=f"shapes {split}", leave=False, disable=num_images < 200):
        img_id = first_id + i
        empty = i % 20 == 7  # ~5% of images have no objects
        crowd = i % 10 == 3
        img, visible, crowd_mask = _render_scene(rng, size, max_objects=4, empty=empty, crowd=crowd)
        stem = f"{img_id:06d}"
        stems.append(stem)
        Image.fromarray(img).save(coco_dir / split / f"{stem}.jpg", quality=92)
        images.append({"id": img_id, "file_name": f"{stem}.jpg", "height": size, "width": size})
        semantic = np.zeros((size, size), dtype=np.uint8)
        for kind, mask in visible:
            if mask.sum() < 12:  # almost fully hidden: not annotated, not in the mask either
                continue
            semantic[mask] = kind + 1
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            ann_id += 1
            seg = _coco_segmentation(mask, prefer_polygon=bool(rng.random() < 0.7))
            annotations.append({
                "id": ann_id, "image_id": img_id, "category_id": SHAPE_CATEGORIES[kind]["id"],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": _segmentation_area(seg, size, size), "iscrowd": 0, "segmentation": seg,
            })
        if crowd_mask.any():
            semantic[crowd_mask] = 255
            ys, xs = np.nonzero(crowd_mask)
            ann_id += 1
            annotations.append({
                "id": ann_id, "image_id": img_id, "category_id": SHAPE_CATEGORIES[0]["id"],
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())],
                "area": float(crowd_mask.sum()), "iscrowd": 1,
                "segmentation": _coco_segmentation(crowd_mask, prefer_polygon=False),
            })
        png = Image.fromarray(semantic, mode="P")
        png.putpalette(VOC_PALETTE)
        png.save(root / "voc" / "SegmentationClass" / f"{stem}.png")
        shutil.copyfile(coco_dir / split / f"{stem}.jpg", root / "voc" / "JPEGImages" / f"{stem}.jpg")
    coco = {
        "info": {"description": f"mnv2_tasks synthetic shapes ({VERSION}), {split}", "version": VERSION},
        "licenses": [], "images": images, "annotations": annotations, "categories": SHAPE_CATEGORIES,
    }
    (coco_dir / "annotations").mkdir(parents=True, exist_ok=True)
    (coco_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return stems


def _write_imagefolder(root: Path, split: str, per_class: int, size: int, seed: int) -> None:
    """One shape per image, centred-ish, random colour, size and rotation; the class is the shape."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(_SHAPES):
        d = root / "imagefolder" / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.fromarray(_background(rng, size, size))
            bg_mean = np.asarray(img).reshape(-1, 3).mean(0)
            r = float(rng.uniform(0.22, 0.42) * size)
            cx, cy = rng.uniform(0.4 * size, 0.6 * size, 2)
            poly = _shape_polygon(name, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
            ImageDraw.Draw(img).polygon(poly, fill=_distinct_colour(rng, bg_mean))
            img.filter(ImageFilter.GaussianBlur(0.5)).save(d / f"{i:05d}.jpg", quality=92)


DEFAULT_PARAMS = dict(
    num_train=400, num_val=100, image_size=160,  # COCO / VOC scenes
    cls_per_class_train=1000, cls_per_class_val=100, cls_image_size=64,  # ImageFolder
    seed=0,
)


def _remove_stale_tmp(root: Path) -> None:
    """Delete the half-written sets (``<root>.tmp-<host>-<pid>``) that generations on this host killed before they
    finished left behind (another host's are never touched: its pids mean nothing here)."""
    host = host_tag().rsplit("-", 1)[0]
    for tmp in root.parent.glob(f"{root.name}.tmp-{host}-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # still running: another process is generating right now
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, left by an interrupted generation", tmp)
        except (PermissionError, OSError):
            continue


def _matches(root: Path, params: dict) -> bool:
    marker = root / "COMPLETE.json"
    if not marker.is_file():
        return False
    try:
        existing = json.loads(marker.read_text())
    except (OSError, ValueError):  # being replaced right now
        return False
    return existing.get("version") == VERSION and all(existing.get(k) == v for k, v in params.items())


def _generate(root: Path, params: dict) -> None:
    """Write the set into a folder of this process's own, then rename it into place: readers never see half a set,
    and a finished set of the same parameters (another node's, on a shared disk) is kept, never removed."""
    num_train, num_val, image_size, seed = params["num_train"], params["num_val"], params["image_size"], params["seed"]
    log.info("generating the embedded shapes data set into %s", root)
    _remove_stale_tmp(root)
    tmp = root.with_name(f"{root.name}.tmp-{host_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "voc" / "SegmentationClass").mkdir(parents=True)
    (tmp / "voc" / "JPEGImages").mkdir(parents=True)
    (tmp / "voc" / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, n, s, first in (("train", num_train, seed, 1), ("val", num_val, seed + 1, 100000)):
        stems = _write_split(tmp, split, n, image_size, s * 7919 + 17, first)
        (tmp / "voc" / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    _write_imagefolder(tmp, "train", params["cls_per_class_train"], params["cls_image_size"], seed * 7919 + 101)
    _write_imagefolder(tmp, "val", params["cls_per_class_val"], params["cls_image_size"], seed * 7919 + 202)
    (tmp / "COMPLETE.json").write_text(json.dumps(params))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists() and not _matches(root, params):  # a set of other parameters: moved aside, then removed
        old = root.with_name(f"{root.name}.old-{host_tag()}")
        try:
            os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    try:
        os.replace(tmp, root)
    except OSError:  # another node published the set first
        shutil.rmtree(tmp, ignore_errors=True)
        if not _matches(root, params):
            raise


def ensure_shapes(root: str | Path | None = None, **params) -> Path:
    """Generate the shapes data set under ``root`` unless it is already there; return ``root``.

    ``params`` override ``DEFAULT_PARAMS`` (sizes, counts, seed). The same parameters always
    give the same files. A marker file records them: an existing set is reused when no
    parameters are given or when they match, and regenerated otherwise. Under a distributed launch local
    rank 0 generates while the node's other ranks wait (``launch.once_per_node``).
    """
    root = Path(root) if root is not None else default_data_dir()
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise TypeError(f"ensure_shapes: unknown parameters {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    full = {**DEFAULT_PARAMS, **params, "version": VERSION}
    once_per_node(f"generate the embedded shapes data set in {root}", lambda: _matches(root, params),
                  lambda: _generate(root, full), lock=root.with_name(f".{root.name}.lock"))
    return root


if __name__ == "__main__":  # python -m mnv2_tasks.data.shapes [root]
    import sys

    logging.basicConfig(level=logging.INFO)
    print(ensure_shapes(sys.argv[1] if len(sys.argv) > 1 else None))
