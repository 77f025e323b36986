"""Semantic segmentation data in the PASCAL VOC layout, and the segmentation LightningDataModule.

Layout (``data=voc data.root=...``; the embedded shapes set is ``<shapes root>/voc``)::

    <root>/JPEGImages/<stem>.jpg
    <root>/SegmentationClass/<stem>.png        palette or grayscale PNG of class indices, 255 = ignore
    <root>/ImageSets/Segmentation/<split>.txt  one stem per line

Samples are ``{"image": (3, H, W) float normalized, "target": (H, W) int64, "meta": dict}``;
batches (``seg_collate``) are ``{"image": (N, 3, H, W), "target": (N, H, W) int64, "meta": [dict]}``.
Validation runs at full resolution; images of different sizes in one batch are padded
(mask 255), so padding never counts in the metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import albumentations as A
import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .images import DataError, read_rgb, same_file_twice
from .loaders import TaskDataModule
from .seg_transforms import IGNORE_INDEX, seg_collate, seg_compose, segmentation_eval, segmentation_train

__all__ = ["VOC_CLASSES", "read_mask", "check_mask", "VOCSegmentation", "SegmentationDataModule", "VOCDataModule"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class indices from a palette ("P") or grayscale ("L") PNG; ``DataError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found; every image in the split list needs a mask in SegmentationClass/")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(
                    f"{path}: mask has mode {im.mode}; expected a palette (P) or grayscale (L) PNG of class indices "
                    "(an RGB colour rendering cannot be read as class ids)"
                )
            return np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: corrupt or unreadable mask ({e}); replace the file or remove it from the split list") from None


def check_mask(mask: np.ndarray, num_classes: int, path: str | Path, image_shape: tuple[int, ...] | None = None) -> None:
    """Raise ``DataError`` naming ``path`` if ``mask`` holds a value that is neither a class nor 255, or its size is not the image's."""
    if image_shape is not None and tuple(mask.shape[:2]) != tuple(image_shape[:2]):
        raise DataError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {image_shape[1]}x{image_shape[0]}; "
            "masks must have their image's size"
        )
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{path}: mask values {bad.tolist()[:10]} are neither a class id (0..{num_classes - 1}) nor the ignore label "
            f"{IGNORE_INDEX}; fix the mask or set data.num_classes"
        )


class VOCSegmentation(Dataset):
    """A VOC-layout split: images listed in ``ImageSets/Segmentation/<split>.txt``, with their masks.

    The list and the existence of every image and mask are checked when the set is built;
    mask values and sizes when a sample is read. Every error names the file.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, transform: A.Compose | None = None,
                 image_dir: str = "JPEGImages", mask_dir: str = "SegmentationClass",
                 list_dir: str = "ImageSets/Segmentation", image_ext: str = ".jpg") -> None:
        self.root = Path(root)
        self.num_classes = num_classes
        self.transform = transform
        list_file = self.root / list_dir / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found; check data.root ({self.root}) and the split name '{split}'")
        stems = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not stems:
            raise DataError(f"{list_file}: split list is empty")
        self.images = [self.root / image_dir / f"{s}{image_ext}" for s in stems]
        same_file_twice(self.images, list_file)
        self.masks = [self.root / mask_dir / f"{s}.png" for s in stems]
        missing = [p for p in self.images if not p.is_file()]
        if missing:
            raise DataError(
                f"{list_file}: names {len(missing)} image(s) that do not exist, e.g. {', '.join(str(p) for p in missing[:3])}; "
                "remove them from the list or add the images"
            )
        missing = [p for p in self.masks if not p.is_file()]
        if missing:
            raise DataError(
                f"{missing[0]}: mask file not found ({len(missing)} missing in all, listed in {list_file}); "
                "every listed image needs a mask in SegmentationClass/"
            )

    def __len__(self) -> int:
        return len(self.images)

    def preflight_items(self) -> list:
        from .preflight import PreflightItem

        return [PreflightItem(i, img, mask, self.num_classes) for i, (img, mask) in enumerate(zip(self.images, self.masks))]

    def drop(self, indices) -> None:
        """Leave these samples out (bad files under ``data.on_bad=warn``)."""
        gone = set(indices)
        keep = [i for i in range(len(self.images)) if i not in gone]
        self.images, self.masks = [self.images[i] for i in keep], [self.masks[i] for i in keep]

    def load(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw (H, W, 3) uint8 image and its checked (H, W) uint8 mask."""
        image = read_rgb(self.images[idx])
        mask = read_mask(self.masks[idx])
        check_mask(mask, self.num_classes, self.masks[idx], image.shape)
        return image, mask

    def __getitem__(self, idx: int) -> dict:
        image, mask = self.load(idx)
        meta = {"path": str(self.images[idx]), "mask_path": str(self.masks[idx]), "size": tuple(mask.shape)}
        return _apply(self.transform, image, mask, meta)


def _apply(transform: A.Compose | None, image: np.ndarray, mask: np.ndarray, meta: dict) -> dict:
    if transform is not None:
        out = transform(image=image, mask=mask)
        image, mask = out["image"], out["mask"]
    else:
        import torch

        image, mask = torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)
    return {"image": image, "target": mask.long(), "meta": meta}


class SegmentationDataModule(TaskDataModule):
    """Train/val loaders of a segmentation data set; subclasses build the data sets (``make_dataset``).

    ``train_transforms`` / ``eval_transforms`` are lists of built albumentations transforms
    (from ``conf/data/*.yaml``); when ``None``, ``segmentation_train(crop_size, scale)`` and
    full-resolution evaluation are used. ``shapes_root`` generates the embedded set first.
    """

    tasks = ("segmentation",)  # the tasks this data serves (config_check names the right data config otherwise)

    collate_fn = staticmethod(seg_collate)

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        crop_size: int = 512,
        scale: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        train_transforms: list | None = None,
        eval_transforms: list | None = None,
        train_split: str = "train",
        val_split: str = "val",
        shapes_root: str | None = None,
        on_bad: str = "error",
        preflight: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, shapes_root, on_bad, preflight, mean, std)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        train_tf = train_transforms if train_transforms is not None else segmentation_train(crop_size, tuple(scale))
        self.train_tf = seg_compose(train_tf, mean=self.mean, std=self.std)
        self.eval_tf = seg_compose(eval_transforms if eval_transforms is not None else segmentation_eval(), mean=self.mean,
                                   std=self.std)
        self.train_split, self.val_split = train_split, val_split

    def make_dataset(self, split: str, transform: A.Compose) -> Dataset:
        raise NotImplementedError

    def truth_of(self, sample: dict) -> dict:
        mask = sample["target"].numpy().copy()
        mask[mask == IGNORE_INDEX] = 0  # ignored pixels drawn as background
        return {"mask": mask}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self.checked(self.make_dataset(self.train_split, self.train_tf), f"{self.root} ({self.train_split})")
        if self.val_set is None:
            self.val_set = self.checked(self.make_dataset(self.val_split, self.eval_tf), f"{self.root} ({self.val_split})")


class VOCDataModule(SegmentationDataModule):
    """VOC-layout data under ``root`` (PASCAL VOC 2012, SBD-augmented lists, or the embedded shapes set)."""

    def __init__(self, root: str, num_classes: int = 21, class_names: Sequence[str] | None = None, image_ext: str = ".jpg",
                 **kwargs) -> None:
        if class_names is None and num_classes == len(VOC_CLASSES):
            class_names = VOC_CLASSES
        super().__init__(num_classes, class_names, **kwargs)
        self.root = Path(root)
        self.image_ext = image_ext

    def make_dataset(self, split: str, transform: A.Compose) -> Dataset:
        return VOCSegmentation(self.root, split, self.num_classes, transform, image_ext=self.image_ext)
