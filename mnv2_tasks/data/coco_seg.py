"""COCO instance annotations turned into semantic masks (``data=coco_seg``).

A mapping from COCO category ids to class indices decides what is segmented: ``None`` maps
every category of the file, in id order, to 1..K; ``"voc"`` is torchvision's reference mapping
of the 20 PASCAL VOC categories (COCO 2017 ids); a dict maps ids explicitly (several ids may share
a class). Pixels of no mapped object are background (0). Crowd regions of mapped categories are
255 (ignore), and so are pixels claimed by objects of two different classes, as torchvision's
reference does.

Layout: ``<root>/<ann_file>`` and ``<root>/<image_dir>/<file_name>``, where ``{split}`` in both
is replaced by the split name (COCO 2017: ``train2017``/``val2017``; the embedded set: ``train``/``val``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Mapping, Sequence

import albumentations as A
import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from .images import DataError, read_rgb
from .seg_transforms import IGNORE_INDEX
from .voc import VOC_CLASSES, SegmentationDataModule, _apply, check_mask

log = logging.getLogger(__name__)

__all__ = ["COCO_TO_VOC", "COCOSegmentation", "COCOSegDataModule", "resolve_category_map"]

# torchvision references/segmentation/coco_utils.py: VOC class index -> COCO 2017 category id
_VOC_CAT_IDS = [5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]
COCO_TO_VOC: dict[int, int] = {cat: i + 1 for i, cat in enumerate(_VOC_CAT_IDS)}


def draw_semantic_mask(coco: COCO, img_id: int, category_map: Mapping[int, int]) -> np.ndarray:
    """An image's instance masks as one (H, W) uint8 class mask: ``category_map[category id]`` where an object
    is, 0 elsewhere, ``IGNORE_INDEX`` for crowd regions and for pixels objects of two classes claim."""
    info = coco.imgs[img_id]
    h, w = int(info["height"]), int(info["width"])
    mask = np.zeros((h, w), dtype=np.uint8)
    conflict = np.zeros((h, w), dtype=bool)
    crowd = np.zeros((h, w), dtype=bool)
    for ann in coco.imgToAnns.get(img_id, []):
        cls = category_map.get(ann["category_id"])
        if cls is None or not ann.get("segmentation"):
            continue
        m = coco.annToMask(ann).astype(bool)
        if ann.get("iscrowd", 0):
            crowd |= m
            continue
        conflict |= m & (mask != 0) & (mask != cls)
        mask[m] = cls
    mask[conflict | crowd] = IGNORE_INDEX
    return mask


def resolve_category_map(category_map: Mapping[int, int] | str | None, categories: Sequence[dict]) -> dict[int, int]:
    """COCO category id -> class index (1..K; 0 is background) from the configured mapping."""
    if category_map is None:
        return {c["id"]: i + 1 for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))}
    if isinstance(category_map, str):
        if category_map != "voc":
            raise ValueError(f"category_map '{category_map}' is not known; use null, 'voc' or a dict {{coco_id: class}}")
        return dict(COCO_TO_VOC)
    return {int(k): int(v) for k, v in category_map.items()}


class COCOSegmentation(Dataset):
    """Images of a COCO instances file with their semantic masks, ``{"image", "target", "meta"}`` samples.

    ``min_labeled_area`` drops images whose mapped, non-crowd annotations cover fewer pixels
    (torchvision's reference keeps training images with >= 1000); 0 keeps every image.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, transform: A.Compose | None = None,
                 category_map: Mapping[int, int] | str | None = None, ann_file: str = "annotations/instances_{split}.json",
                 image_dir: str = "{split}", min_labeled_area: float = 0) -> None:
        self.root = Path(root)
        self.ann_path = self.root / ann_file.format(split=split)
        self.image_dir = self.root / image_dir.format(split=split)
        self.num_classes = num_classes
        self.transform = transform
        if not self.ann_path.is_file():
            raise DataError(f"{self.ann_path}: COCO annotation file not found; check data.root and data.ann_file")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            try:
                self.coco = COCO(str(self.ann_path))
            except Exception as e:  # noqa: BLE001 - re-raised with the file named
                raise DataError(f"{self.ann_path}: not a readable COCO instances file ({type(e).__name__}: {e})") from None
        cats = self.coco.loadCats(self.coco.getCatIds())
        self.category_map = resolve_category_map(category_map, cats)
        bad = {k: v for k, v in self.category_map.items() if not 1 <= v < num_classes}
        if bad:
            raise ValueError(f"category_map {bad} maps to classes outside 1..{num_classes - 1} (num_classes={num_classes})")
        unknown = sorted(set(self.category_map) - {c["id"] for c in cats})
        if unknown:
            log.warning("%s: categories %s of the mapping are not in the file", self.ann_path, unknown)
        known = {c["id"] for c in cats}
        stray = sorted({a["category_id"] for a in self.coco.dataset.get("annotations", [])} - known)
        if stray:
            raise DataError(f"{self.ann_path}: annotations use category ids {stray[:10]} that are not in 'categories'")
        ids = sorted(self.coco.getImgIds())
        if min_labeled_area > 0:
            ids = [i for i in ids if self._labeled_area(i) >= min_labeled_area]
        if not ids:
            raise DataError(f"{self.ann_path}: no images (after min_labeled_area={min_labeled_area})")
        self.ids = ids
        missing = [self.image_dir / self.coco.imgs[i]["file_name"] for i in ids]
        missing = [p for p in missing if not p.is_file()]
        if missing:
            raise DataError(
                f"{self.ann_path}: names {len(missing)} image(s) that do not exist, e.g. "
                f"{', '.join(str(p) for p in missing[:3])}; check data.root and data.image_dir"
            )

    def _labeled_area(self, img_id: int) -> float:
        anns = self.coco.imgToAnns.get(img_id, [])
        return sum(a.get("area", 0) for a in anns if not a.get("iscrowd", 0) and a["category_id"] in self.category_map)

    def __len__(self) -> int:
        return len(self.ids)

    def preflight_items(self) -> list:
        from .preflight import PreflightItem

        return [PreflightItem(k, self.image_dir / self.coco.imgs[i]["file_name"],
                              size=(int(self.coco.imgs[i]["height"]), int(self.coco.imgs[i]["width"])))
                for k, i in enumerate(self.ids)]

    def drop(self, indices) -> None:
        """Leave these samples out (bad files under ``data.on_bad=warn``)."""
        gone = set(indices)
        self.ids = [i for k, i in enumerate(self.ids) if k not in gone]

    def semantic_mask(self, img_id: int) -> np.ndarray:
        """(H, W) uint8: 0 background, mapped class ids, 255 for crowds and for pixels two classes claim."""
        return draw_semantic_mask(self.coco, img_id, self.category_map)

    def load(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw (H, W, 3) uint8 image and its (H, W) uint8 semantic mask."""
        img_id = self.ids[idx]
        path = self.image_dir / self.coco.imgs[img_id]["file_name"]
        image = read_rgb(path)
        mask = self.semantic_mask(img_id)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but {self.ann_path} gives "
                f"{mask.shape[1]}x{mask.shape[0]} for image id {img_id}; fix the annotation's width/height"
            )
        check_mask(mask, self.num_classes, f"{self.ann_path} (image id {img_id})")
        return image, mask

    def __getitem__(self, idx: int) -> dict:
        image, mask = self.load(idx)
        img_id = self.ids[idx]
        meta = {"path": str(self.image_dir / self.coco.imgs[img_id]["file_name"]), "image_id": img_id, "size": tuple(mask.shape)}
        return _apply(self.transform, image, mask, meta)


class COCOSegDataModule(SegmentationDataModule):
    """COCO instances -> semantic masks; see ``COCOSegmentation`` for ``category_map`` and the layout.

    With ``category_map="voc"`` and ``class_names=None`` the VOC class names are used.
    """

    def __init__(self, root: str, num_classes: int, category_map: Mapping[int, int] | str | None = None,
                 class_names: Sequence[str] | None = None, ann_file: str = "annotations/instances_{split}.json",
                 image_dir: str = "{split}", min_train_labeled_area: float = 0, **kwargs) -> None:
        if class_names is None and category_map == "voc":
            class_names = VOC_CLASSES
        super().__init__(num_classes, class_names, **kwargs)
        self.root = Path(root)
        self.category_map = category_map
        self.ann_file, self.image_dir = ann_file, image_dir
        self.min_train_labeled_area = min_train_labeled_area

    def make_dataset(self, split: str, transform: A.Compose) -> Dataset:
        min_area = self.min_train_labeled_area if split == self.train_split else 0
        return COCOSegmentation(self.root, split, self.num_classes, transform, self.category_map, self.ann_file,
                                self.image_dir, min_area)
