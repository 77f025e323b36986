"""Detection data modules for the labels users bring: Ultralytics YOLO (``data=yolo``) and Pascal VOC XML
(``data=voc_det``).

Each reads its split into COCO form (``det_formats``) and hands it to the COCO module's own dataset, so a sample,
a pre-flight check and an mAP are the same as the COCO module's on the same images. The classes come from the data
(``data.yaml``'s ``names``; VOC's ``labelmap.txt`` or the names found); ``data.num_classes`` left ``null`` takes
their count + 1 (background), and an explicit value that disagrees is refused with both numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .coco import CocoDataModule
from .det_formats import DetSet
from .voc_xml import read_voc
from .yolo_labels import read_yolo

__all__ = ["YoloDataModule", "VocDetectionDataModule"]

log = logging.getLogger(__name__)


class _ConvertedDataModule(CocoDataModule):
    """A COCO data module whose splits are read from another layout (``read_split``) into memory."""

    def __init__(self, root: str, train_split: str = "train", val_split: str = "val", **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.train_split, self.val_split = train_split, val_split
        self._read: dict[bool, DetSet] = {}

    def read_split(self, split: str, train: bool) -> DetSet:  # pragma: no cover - each layout's
        raise NotImplementedError

    def _split(self, train: bool) -> DetSet:
        if train not in self._read:
            ds = self.read_split(self.train_split if train else self.val_split, train)
            if ds.problems:
                log.warning("%s: %s", ds.source, ", ".join(f"{n} x {k}" for k, n in ds.problems.items()))
            self._read[train] = ds
            if train:
                self.train_ann_file = ds.source
            else:
                self.val_ann_file = ds.source
        return self._read[train]

    def _source(self, train: bool) -> tuple[Path, Path, dict | None]:
        ds = self._split(train)
        return ds.source, ds.img_dir, ds.coco


class YoloDataModule(_ConvertedDataModule):
    """``data=yolo data.root=<folder of data.yaml>``: the ``train`` and ``val`` entries of Ultralytics' ``data.yaml``
    (``data.train_split`` / ``data.val_split`` name others, e.g. ``test``)."""

    def read_split(self, split: str, train: bool) -> DetSet:
        return read_yolo(self.root, split, self.on_bad)


class VocDetectionDataModule(_ConvertedDataModule):
    """``data=voc_det data.root=<VOCdevkit/VOC2012>``: boxes from ``Annotations/*.xml`` of the ids in
    ``ImageSets/Main/<split>.txt``; ``difficult`` objects neither targets nor misses. ``class_names``: the label
    order (default ``labelmap.txt``, else the training split's names sorted; validation uses the training order)."""

    def __init__(self, root: str, class_names: Sequence[str] | None = None, image_ext: str = ".jpg", **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.voc_class_names = list(class_names) if class_names else None
        self.image_ext = image_ext

    def read_split(self, split: str, train: bool) -> DetSet:
        names = self.voc_class_names
        if not train and names is None and (self.root / "ImageSets" / "Main" / f"{self.train_split}.txt").is_file():
            names = self._split(True).class_names  # the training split's order
        return read_voc(self.root, split, names, self.image_ext, self.on_bad)
