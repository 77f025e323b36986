"""Classification data: any ImageFolder tree (``<root>/{train,val}/<class>/*.jpg``), ImageNet's included."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import albumentations as A
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .images import DataError, read_rgb, same_file_twice
from .loaders import TaskDataModule
from .transforms import classification_eval, classification_train, compose


class ImageFolderDataset(Dataset):
    """Samples ``{"image": (3, H, W) float, "target": int}`` from ``root/<class>/<image>``."""

    def __init__(self, root: str | Path, transform: A.Compose | None = None, classes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data root not found; set data.root to a folder with one sub-folder per class")
        found, _ = find_classes(str(self.root)) if any(p.is_dir() for p in self.root.iterdir()) else ([], {})
        if not found:
            raise DataError(f"{self.root}: no class sub-folders; expected {self.root}/<class>/<image>.jpg")
        self.classes = list(classes) if classes is not None else found
        missing = sorted(set(self.classes) - set(found))
        if missing:
            raise DataError(f"{self.root}: class folders {missing} are missing (the training split has them); add them or fix data.root")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        for c in self.classes:
            d = self.root / c
            if not any(Path(p).suffix.lower() in IMG_EXTENSIONS for p in d.iterdir()):
                raise DataError(f"{d}: class folder has no images ({', '.join(IMG_EXTENSIONS)}); add images or remove the folder")
        self.samples = make_dataset(str(self.root), self.class_to_idx, extensions=IMG_EXTENSIONS)
        same_file_twice([path for path, _ in self.samples], self.root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def preflight_items(self) -> list:
        from .preflight import PreflightItem

        return [PreflightItem(i, Path(path)) for i, (path, _) in enumerate(self.samples)]

    def drop(self, indices) -> None:
        """Leave these samples out (bad files under ``data.on_bad=warn``)."""
        gone = set(indices)
        self.samples = [s for i, s in enumerate(self.samples) if i not in gone]

    def __getitem__(self, idx: int) -> dict:
        path, target = self.samples[idx]
        image = read_rgb(path)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": image, "target": target}


class ImageFolderDataModule(TaskDataModule):
    """``root/train`` and ``root/val`` ImageFolder trees; ``shapes_root`` generates the embedded set first.

    ``train_transforms`` / ``eval_transforms`` are lists of built albumentations transforms (from
    ``conf/data/*.yaml``); when ``None`` the ImageNet recipe at ``image_size`` is used.
    """

    tasks = ("classification",)  # the tasks this data serves (config_check names the right data config otherwise)

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        train_transforms: list | None = None,
        eval_transforms: list | None = None,
        train_split: str = "train",
        val_split: str = "val",
        shapes_root: str | None = None,
        num_classes: int | None = None,
        on_bad: str = "error",
        preflight: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, shapes_root, on_bad, preflight, mean, std)
        self.root = Path(root)
        self.expected_num_classes = num_classes  # data.num_classes, checked against the class folders
        self.image_size = image_size
        self.train_tf = compose(train_transforms if train_transforms is not None else classification_train(image_size),
                                self.mean, self.std)
        self.eval_tf = compose(eval_transforms if eval_transforms is not None else classification_eval(image_size),
                               self.mean, self.std)
        self.train_split, self.val_split = train_split, val_split
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Refuse a ``data.image_size`` the transforms do not produce (a checkpoint records what was used)."""
        import numpy as np

        probe = np.zeros((3 * self.image_size + 7, 2 * self.image_size + 5, 3), np.uint8)
        for name, tf in (("eval_transforms", self.eval_tf), ("train_transforms", self.train_tf)):
            h, w = tf(image=probe)["image"].shape[-2:]
            if (h, w) != (self.image_size, self.image_size):
                raise ValueError(f"data.image_size={self.image_size}, but data.{name} make {w}x{h} images; let the "
                                 "transforms follow it (size: ${data.image_size}) or set data.image_size to what they make")

    def truth_of(self, sample: dict) -> dict:
        k = int(sample["target"])
        return {"topk": [(k, self.class_names[k], 1.0)]}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self.checked(ImageFolderDataset(self.root / self.train_split, self.train_tf), str(self.root / self.train_split))
        if self.val_set is None:
            classes = self.train_set.classes if self.train_set is not None else None
            self.val_set = self.checked(ImageFolderDataset(self.root / self.val_split, self.eval_tf, classes=classes),
                                        str(self.root / self.val_split))

    @property
    def class_names(self) -> list[str]:
        self.setup("validate")
        return list(self.val_set.classes)

    @property
    def num_classes(self) -> int:
        self.setup("validate")
        n = len(self.val_set.classes)
        if self.expected_num_classes is not None and self.expected_num_classes != n:
            raise ValueError(f"{self.root / self.val_split}: {n} class folders but data.num_classes={self.expected_num_classes}; "
                             f"set data.num_classes={n}")
        return n
