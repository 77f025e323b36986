"""Detection data in COCO format: any instances JSON with its image folder, the embedded shapes included.

Batches are ``{"image": (N, 3, H, W) float normalized, "target": [ {"boxes": (M, 4) xyxy float32 in
input pixels, "labels": (M,) int64 in 1..K, "ignore_boxes": (I, 4)} ], "meta": [ {"image_id",
"file_name", "orig_size": (h, w), "input_size": (H, W)} ]}``. Labels are contiguous (0 = background,
1..K the categories sorted by COCO id); ``label_to_cat_id`` maps them back for results. Crowd boxes
are not targets (they travel as ``ignore_boxes``); images without objects are kept as negatives.

Bad input raises ``DataError`` naming the file and the entry: a file that is not JSON or lacks
``images``/``annotations``/``categories``, an annotation with an unknown category id or a box
outside its image, an image missing on disk, a corrupt image. With ``on_bad="warn"`` the bad
annotations and missing images are dropped instead, and counted in one warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .det_transforms import detection_pipeline, ssd_train_transforms
from .coco_checks import check_integrity, load_coco_json
from .images import DataError, read_rgb
from .coco_annotations import AnnotationReader, _Kept
from .loaders import TaskDataModule
from .packed import ImageTable
from .shapes import ensure_shapes

log = logging.getLogger(__name__)

__all__ = ["CocoDetection", "CocoDataModule", "detection_collate", "load_coco_json", "DataError"]

# problems of an annotation that ``on_bad="warn"`` repairs instead of dropping it
_CLIPPED = {"box outside the image"}


class CocoDetection(AnnotationReader, Dataset):
    """One image of a COCO instances file per item (see the module docstring for the sample format).

    The annotations are held as flat arrays (boxes, labels, crowd flags, per-image offsets) and the image entries
    as one packed buffer (``packed.PackedList``), as MMEngine serialises its data sets: loader workers forked from
    the main process share them page for page instead of copying a Python object per box.

    Args:
        ann_file: COCO instances JSON.
        img_dir: folder the images' ``file_name`` are relative to.
        transform: an albumentations pipeline from ``det_transforms.detection_pipeline``.
        cat_ids: category ids in label order (labels 1..K); default: this file's, sorted. Give the
            training set's to the validation set so that both use the same labels.
        on_bad: ``"error"`` (default) or ``"warn"``: drop bad annotations and missing images, counted.
        box_tolerance: pixels a box may extend past the image border before it is an error (it is clipped).
        check_files: check at construction that every image file exists.
        cache_images: keep each decoded image in memory after its first read (small sets such as the
            embedded one: decoding is then paid once; each loader worker process keeps its own cache).
        data: the instances dict itself (a YOLO or VOC set read into COCO form, ``det_formats``); ``ann_file`` then
            only names the source in messages, and evaluation scores against this dict.
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path,
        transform=None,
        cat_ids: Sequence[int] | None = None,
        on_bad: str = "error",
        box_tolerance: float = 1.0,
        check_files: bool = True,
        cache_images: bool = False,
        data: dict | None = None,
    ) -> None:
        if on_bad not in ("error", "warn"):
            raise ValueError(f"on_bad must be 'error' or 'warn', got {on_bad!r}")
        # decoded images kept after their first read (per process: each loader worker fills its own)
        self.cache: dict[int, np.ndarray] | None = {} if cache_images else None
        self.ann_file, self.img_dir = Path(ann_file), Path(img_dir)
        self.transform = transform
        self.box_tolerance_px = float(box_tolerance)
        self.on_bad = on_bad
        self.problems: Counter = Counter()
        self._examples: dict[str, str] = {}
        self.in_memory = data is not None
        data = load_coco_json(self.ann_file) if data is None else data
        if not self.img_dir.is_dir():
            raise DataError(f"{self.img_dir}: image folder not found (for {self.ann_file}); set the img_dir paths")

        check_integrity(data, self.ann_file, self.img_dir)
        # categories <-> contiguous labels
        self.categories = {int(c["id"]): c for c in data["categories"]}
        if not self.categories:
            raise DataError(f"{self.ann_file}: 'categories' is empty; detection needs at least one category")
        self.cat_ids = [int(c) for c in cat_ids] if cat_ids is not None else sorted(self.categories)
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = [0] + list(self.cat_ids)  # index 0: background
        unknown = sorted(set(self.categories) - set(self.cat_ids))
        if unknown:
            raise DataError(f"{self.ann_file}: categories {unknown} are not among the training categories {self.cat_ids}")

        # images: ids and sizes as arrays (-1: no size given), the entries themselves packed
        for i, im in enumerate(data["images"]):
            if not isinstance(im, dict) or not {"id", "file_name"} <= set(im):
                raise DataError(f"{self.ann_file}: images[{i}] needs 'id' and 'file_name': {str(im)[:200]}")
        entries = data["images"]
        self.images = ImageTable(entries)
        kept = _Kept(entries)
        self._size = np.array(kept.sizes, dtype=np.float64).reshape(-1, 2)  # (W, H); -1: not given
        missing = np.zeros(len(entries), dtype=bool)
        if check_files:
            for k, im in enumerate(entries):
                if not (self.img_dir / im["file_name"]).is_file():
                    missing[k] = True
                    self._problem("image file missing", f"image id {im['id']}: {self.img_dir / im['file_name']} does not exist")
            if missing.any() and on_bad == "error":
                first = entries[int(np.flatnonzero(missing)[0])]
                raise DataError(
                    f"{self.img_dir / first['file_name']}: image missing on disk (image id {first['id']} in {self.ann_file}); "
                    f"{int(missing.sum())} of {len(entries)} images are missing. Fix img_dir, or set data.on_bad=warn to skip them"
                )

        # annotations: validated one by one, kept as flat arrays sorted by image (per-image offsets)
        self._header = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        if not self._read_fast(data["annotations"], kept):
            for i, ann in enumerate(data["annotations"]):
                self._add_annotation(i, ann, kept)
        self._store(kept, len(entries))
        self._keep = np.flatnonzero(~missing).astype(np.int64)  # the positions of the images this set serves
        if self.problems:  # say what happened to each kind: boxes past the border are clipped and kept, the rest dropped
            for verb, kinds in (("clipped to the image and kept", _CLIPPED), ("dropped", None)):
                found = {k: n for k, n in self.problems.items() if (k in _CLIPPED) == (kinds is not None)}
                if found:
                    log.warning("%s: %s (%s); e.g. %s", self.ann_file, verb, ", ".join(f"{n} x {k}" for k, n in found.items()),
                                "; ".join(self._examples[k] for k in found))

    @property
    def num_classes(self) -> int:
        """Categories + background."""
        return len(self.cat_ids) + 1

    def __len__(self) -> int:
        return len(self._keep)

    @property
    def ids(self) -> list[int]:
        """The image ids this set serves, in sample order."""
        return [int(self.images.id_at(k)) for k in self._keep]

    @property
    def num_objects(self) -> int:
        """Annotations (crowd regions included) in the images this set serves."""
        return int(np.diff(self.ann_offsets)[self._keep].sum())

    def annotations(self, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``idx``'s boxes (M, 4) xyxy in the file's pixels (clipped), labels (M,) and crowd flags (M,):
        views of the shared arrays."""
        k = self._keep[idx]
        a, b = self.ann_offsets[k], self.ann_offsets[k + 1]
        return self.ann_boxes[a:b], self.ann_labels[a:b], self.ann_crowd[a:b]

    def training_boxes(self, input_hw: tuple[int, int]) -> np.ndarray:
        """Every non-crowd box of the images served, scaled to an ``input_hw`` input (as the resize makes them)."""
        in_h, in_w = input_hw
        counts = np.diff(self.ann_offsets)
        served = np.zeros(len(counts), dtype=bool)
        served[self._keep] = True
        owner = np.repeat(np.arange(len(counts)), counts)
        take = served[owner] & ~self.ann_crowd
        size = self._size[owner[take]]
        scale = np.where(size[:, :1] > 0, in_w / np.maximum(size[:, :1], 1e-9), 1.0), np.where(size[:, 1:] > 0, in_h / np.maximum(size[:, 1:], 1e-9), 1.0)
        boxes = self.ann_boxes[take].astype(np.float64)
        boxes[:, 0::2] *= scale[0]
        boxes[:, 1::2] *= scale[1]
        return boxes.astype(np.float32)

    def preflight_items(self) -> list:
        """Every image, with the size the file gives it (under ``on_bad="warn"`` a size mismatch rescales the boxes instead)."""
        from .preflight import PreflightItem

        items = []
        for n, k in enumerate(self._keep):
            W, H = self._size[k]
            size = (int(H), int(W)) if self.on_bad == "error" and W >= 0 else None
            items.append(PreflightItem(n, self.img_dir / self.images.file_name(k), size=size))
        return items

    def ground_truth(self) -> Path | dict:
        """What evaluation scores against: the annotation file itself where this set kept all of it, else (in memory)
        the images and annotations it kept, boxes as kept (clipped), as its log reported."""
        if not self.in_memory and not self.problems and len(self._keep) == len(self.images):
            return self.ann_file
        images, annotations = [], []
        for k in self._keep:
            im = self.images.entry(k)
            images.append(im)
            for j in range(self.ann_offsets[k], self.ann_offsets[k + 1]):
                x0, y0, x1, y1 = (float(v) for v in self.ann_boxes[j])
                annotations.append({"id": int(self.ann_ids[j]), "image_id": im["id"],
                                    "category_id": int(self.label_to_cat_id[self.ann_labels[j]]),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(self.ann_area[j]),
                                    "iscrowd": int(self.ann_crowd[j])})
        annotations.sort(key=lambda a: a["id"])
        return {**self._header, "images": images, "annotations": annotations}

    def drop(self, indices) -> None:
        """Leave these samples out (bad files under ``data.on_bad=warn``)."""
        gone = np.zeros(len(self._keep), dtype=bool)
        gone[list(indices)] = True
        self._keep = self._keep[~gone]

    def load(self, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Image (H, W, 3) uint8, boxes (M, 4) xyxy, labels (M,) with crowd boxes labelled 0, image entry."""
        k = int(self._keep[idx])
        im = self.images.entry(k)
        path = self.img_dir / im["file_name"]
        image = self.cache.get(im["id"]) if self.cache is not None else None
        if image is None:
            try:
                image = read_rgb(path)
            except DataError as e:
                raise DataError(f"{e} [image id {im['id']} in {self.ann_file}]") from None
            if self.cache is not None:
                image.setflags(write=False)  # shared by every epoch: a transform writing into it would fail loudly
                self.cache[im["id"]] = image
        boxes, labels, crowd = self.annotations(idx)
        boxes = boxes.copy()
        labels = np.where(crowd, 0, labels)
        h, w = image.shape[:2]
        if "width" in im and "height" in im and (int(im["height"]), int(im["width"])) != (h, w):
            if self.on_bad == "error":
                raise DataError(f"{path}: image is {w}x{h} on disk but {self.ann_file} says {im['width']}x{im['height']} "
                                f"(image id {im['id']}); fix the annotation file or set data.on_bad=warn to rescale its boxes")
            boxes = boxes * np.array([w / im["width"], h / im["height"]] * 2, dtype=np.float32)
        return image, boxes, labels, im

    def __getitem__(self, idx: int) -> dict:
        return self.make_sample(*self.load(idx))

    def make_sample(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, im: dict, **extra: np.ndarray) -> dict:
        """The sample of ``load``'s outputs, transformed; ``extra`` targets (e.g. ``mask=``) go through the
        same transform and come back as entries of the sample."""
        orig_h, orig_w = image.shape[:2]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels, **extra)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
            extra = {k: out[k] for k in extra}
        else:
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
            extra = {k: torch.from_numpy(v) for k, v in extra.items()}
        in_h, in_w = image.shape[-2:]
        # clip and drop degenerate boxes once more, whatever the transform did
        boxes = torch.from_numpy(boxes).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, in_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, in_h)
        labels = torch.from_numpy(labels)
        ok = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
        boxes, labels = boxes[ok], labels[ok]
        crowd = labels == 0
        target = {"boxes": boxes[~crowd], "labels": labels[~crowd], "ignore_boxes": boxes[crowd]}
        meta = {"image_id": im["id"], "file_name": im["file_name"], "orig_size": (orig_h, orig_w), "input_size": (int(in_h), int(in_w))}
        return {"image": image, "target": target, "meta": meta, **extra}


def detection_collate(samples: list[dict]) -> dict:
    """Stack images; keep targets and meta as lists (one per image)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "target": [s["target"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }


class CocoDataModule(TaskDataModule):
    """Train and val COCO sets. Paths are relative to ``root`` unless absolute.

    ``train_transforms``: built albumentations transforms (Hydra ``_target_`` list in the data
    config); ``None`` gives ``ssd_train_transforms()``. Both pipelines end with a resize to
    ``image_size`` (non aspect-preserving, as SSD) and normalization; evaluation only resizes.
    ``shapes_root`` generates the embedded shapes data set there first. ``num_classes`` (categories +
    background), when given, is checked against the files, so that configs can pass it to the model.
    """

    tasks = ("detection",)  # the tasks this data serves (config_check names the right data config otherwise)

    collate_fn = staticmethod(detection_collate)

    def __init__(
        self,
        root: str,
        train_ann_file: str = "annotations/instances_train2017.json",
        train_img_dir: str = "train2017",
        val_ann_file: str = "annotations/instances_val2017.json",
        val_img_dir: str = "val2017",
        image_size: int | Sequence[int] = 320,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        train_transforms: list | None = None,
        on_bad: str = "error",
        box_tolerance: float = 1.0,
        min_box_size: float = 1.0,
        num_classes: int | None = None,
        shapes_root: str | None = None,
        preflight: bool = True,
        cache_images: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, shapes_root, on_bad, preflight, mean, std)
        self.cache_images = cache_images
        self.root = Path(root)
        self.expected_num_classes = num_classes
        self.train_ann_file, self.train_img_dir = self.root / train_ann_file, self.root / train_img_dir
        self.val_ann_file, self.val_img_dir = self.root / val_ann_file, self.root / val_img_dir
        self.image_size = image_size
        augment = list(train_transforms) if train_transforms is not None else ssd_train_transforms()
        self.train_tf = detection_pipeline(augment, image_size, min_size=min_box_size, mean=self.mean, std=self.std)
        self.eval_tf = detection_pipeline([], image_size, min_size=min_box_size, mean=self.mean, std=self.std)
        self.box_tolerance = box_tolerance

    def _dataset(self, ann_file: Path, img_dir: Path, transform, cat_ids=None, data: dict | None = None) -> CocoDetection:
        return CocoDetection(ann_file, img_dir, transform, cat_ids=cat_ids, on_bad=self.on_bad, box_tolerance=self.box_tolerance,
                             cache_images=self.cache_images, data=data)

    def _source(self, train: bool) -> tuple[Path, Path, dict | None]:
        """A split: the file named in messages, the image folder, the instances dict (None: the file's; det_layouts)."""
        return (self.train_ann_file, self.train_img_dir, None) if train else (self.val_ann_file, self.val_img_dir, None)

    def setup(self, stage: str | None = None) -> None:
        if self.shapes_root is not None:
            ensure_shapes(self.shapes_root)
        if self.train_set is None and stage in (None, "fit"):
            ann, img_dir, data = self._source(True)
            self.train_set = self.checked(self._dataset(ann, img_dir, self.train_tf, data=data), str(ann))
            if self.train_set.num_objects == 0:
                raise DataError(f"{self.train_ann_file}: no object in any of its {len(self.train_set)} training images; "
                                "a detector cannot learn from it: check the annotations' image ids and category ids")
        if self.val_set is None:
            cat_ids = self.train_set.cat_ids if self.train_set is not None else None
            ann, img_dir, data = self._source(False)
            self.val_set = self.checked(self._dataset(ann, img_dir, self.eval_tf, cat_ids, data=data), str(ann))
            n = self.val_set.num_classes
            if self.expected_num_classes is not None and self.expected_num_classes != n:
                raise DataError(
                    f"{self.val_ann_file}: {n - 1} categories (+ background = {n} classes) but data.num_classes="
                    f"{self.expected_num_classes}; set data.num_classes={n}, or null to take it from the data"
                )

    @property
    def num_classes(self) -> int:
        """Categories + background, as ``build_ssdlite(num_classes=...)`` counts them."""
        self.setup("validate")
        return self.val_set.num_classes

    @property
    def class_names(self) -> list[str]:
        """Category names of labels 1..K (the background, label 0, is not listed)."""
        self.setup("validate")
        ds = self.val_set
        return [str(ds.categories[c].get("name", c)) for c in ds.cat_ids]

    @property
    def category_ids(self) -> list[int]:
        """The data set's category id of labels 1..K."""
        return [int(c) for c in self.label_to_cat_id[1:]]

    def truth_of(self, sample: dict) -> dict:
        t, names = sample["target"], self.class_names
        labels = np.concatenate([t["labels"].numpy(), np.zeros(len(t["ignore_boxes"]), np.int64)])  # crowd: label 0
        return {"boxes": np.concatenate([t["boxes"].numpy(), t["ignore_boxes"].numpy()]), "labels": labels,
                "scores": np.ones(len(labels), np.float32), "names": [names[k - 1] if k else "crowd" for k in labels.tolist()],
                "truth": True}

    @property
    def val_ground_truth(self) -> Path | dict:
        """The ground truth detection evaluation scores against: exactly what the validation set kept."""
        return self.val_set.ground_truth()

    @property
    def label_to_cat_id(self) -> list[int]:
        self.setup("validate")
        return self.val_set.label_to_cat_id
