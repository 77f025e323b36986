"""DataLoader construction shared by every task's data module."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .images import DataError
from .shapes import ensure_shapes

log = logging.getLogger(__name__)


def resolve_workers(num_workers: int | str) -> int:
    """``data.num_workers``; ``"auto"``: 0 on a machine with 2 cores or fewer, where loader processes take
    the cores the training step needs (measured: a detection epoch 22% faster in-process, BENCHMARKS.md),
    else one per core but one, at most 8."""
    if num_workers != "auto":
        return int(num_workers)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores - 1)


def eval_sampler(dataset: Dataset):
    """Under DDP, a sampler that splits the set across ranks without padding.

    Lightning's default ``DistributedSampler`` repeats samples to even out the ranks, which
    would count them twice in validation metrics; this one gives every sample to exactly one rank.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return None


def transforms_of(dataset) -> list:
    """The albumentations pipelines a data set (or a wrapper of one, ``.dataset``) applies."""
    import albumentations as A

    found, seen = [], set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        tf = getattr(dataset, "transform", None)
        if isinstance(tf, A.BaseCompose):
            found.append(tf)
        dataset = getattr(dataset, "dataset", None)
    return found


def seed_worker(worker_id: int) -> None:
    """A loader worker's seeds: Lightning's per-worker, per-rank seeds of torch, numpy and random, and the
    augmentation pipelines' own generators from them (else every worker would draw the same augmentations)."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    for tf in transforms_of(info.dataset if info is not None else None):
        tf.set_random_seed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """Training loaders shuffle (Lightning adds a DistributedSampler under DDP); eval loaders never pad."""
    sampler = None if train else eval_sampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=(train and len(dataset) > batch_size) if drop_last is None else drop_last,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )


class TaskDataModule(L.LightningDataModule):
    """What every data module of the package shares: loader sizes, the embedded data set's
    generation (``shapes_root``), and the train / val / test loaders over ``train_set`` /
    ``val_set`` (built by the subclass's ``setup``), batched with ``collate_fn``.

    The data contract: tasks, evaluation and checkpoints read a data module through the members in
    ``CONTRACT`` only (``tests/test_contract.py`` checks it), as the model side reads ``TaskNet``'s
    declarations. A subclass sets them (attributes or properties); the defaults say "not given".
    """

    # ---- the data contract ----------------------------------------------------------------------
    tasks: tuple[str, ...] = ()  # the tasks this data serves (config_check refuses another, naming the data that does)
    num_classes: int  # what the network predicts: classes (segmentation: with background; detection: categories + 1)
    class_names: list[str] | None = None  # a name per class (detection: per category, labels 1..K)
    category_ids: list[int] | None = None  # the data set's own id of each class (COCO category ids of labels 1..K)
    seg_class_names: list[str] | None = None  # multi-task: the segmentation classes' names (background first)
    val_ann_file: Path | None = None  # detection: the validation annotation file (named in messages and metrics.json)
    val_ground_truth: Path | dict | None = None  # detection: what evaluation scores against: exactly what the set kept
    label_to_cat_id: list[int] | None = None  # detection: the category id of each label (index 0: background)
    root: Path | None = None  # where the data is (named in messages)
    image_size: int | None = None  # the evaluation input size; None: whole images at their own resolution
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    skipped_samples: int = 0  # bad samples left out by the pre-flight check (data.on_bad=warn)
    config: dict | None = None  # the resolved data config that built this module (set by train); recorded with the model
    CONTRACT = ("tasks", "collate_fn", "num_classes", "class_names", "category_ids", "seg_class_names", "val_ann_file", "val_ground_truth",
                "label_to_cat_id",
                "root", "image_size", "config", "train_set", "val_set", "skipped_samples", "input_spec",
                "truth_of", "prepare_data", "setup", "train_dataloader", "val_dataloader", "test_dataloader")

    collate_fn: Callable | None = None  # a staticmethod in subclasses that batch other than torch's default
    eval_tf = None  # the validation pipeline (albumentations), built by the subclass

    def __init__(self, batch_size: int, eval_batch_size: int | None = None, num_workers: int | str = 4,
                 shapes_root: str | None = None, on_bad: str = "error", preflight: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        from .transforms import IMAGENET_MEAN, IMAGENET_STD

        # the input normalisation (pixels / 255 - mean) / std: ImageNet's, or the pretrained weights' own (Keras's:
        # 0.5, 0.5; config.settings_for_weights sets it); recorded in checkpoints (input_spec) for inference
        self.mean = tuple(float(v) for v in (mean if mean is not None else IMAGENET_MEAN))
        self.std = tuple(float(v) for v in (std if std is not None else IMAGENET_STD))
        if on_bad not in ("error", "warn"):
            raise ValueError(f"data.on_bad must be 'error' (stop before training) or 'warn' (skip bad samples), got {on_bad!r}")
        self.on_bad, self.preflight = on_bad, preflight
        self.skipped_samples = 0
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = resolve_workers(num_workers)
        self.shapes_root = shapes_root
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def input_spec(self) -> dict:
        """What inference needs to feed a model as evaluation on this data does (recorded in checkpoints):
        the eval transforms themselves (``data/inference.py``), the size, the normalisation, the classes."""
        from .inference import transform_spec

        names = self.class_names
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "eval_transform": transform_spec(self.eval_tf),
                "class_names": list(names) if names is not None else None,
                "category_ids": list(self.category_ids) if self.category_ids is not None else None,
                "data": self.config}

    def truth_of(self, sample: dict) -> dict:
        """A sample's ground truth in the form of a frame result (``models/results.py``), for drawing it as predictions
        are drawn (``mnv2-browse``, ``val_predictions.png``): each data module says how its targets read."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to draw its targets (truth_of)")

    def checked(self, dataset, what: str):
        """``dataset`` after the pre-flight check (``data/preflight.py``): every bad sample reported at once,
        before training; under ``data.on_bad=warn`` they are dropped, logged and counted."""
        if not self.preflight:
            return dataset
        from .preflight import run_preflight_once

        problems = run_preflight_once(dataset.preflight_items(), what, self.num_workers)
        if not problems:
            return dataset
        if self.on_bad == "error":
            raise DataError(f"{what}: {len(problems)} bad sample(s), found before training:\n  " + "\n  ".join(problems.values())
                            + "\nFix or remove them, or set data.on_bad=warn to skip them (data.preflight=false skips this check)")
        for p in problems.values():
            log.warning("skipped (data.on_bad=warn): %s", p)
        dataset.drop(sorted(problems))
        self.skipped_samples += len(problems)
        return dataset

    def _loader(self, dataset, batch_size: int, train: bool):
        from .preflight import SkipBadSamples, SkippingCollate

        if self.on_bad == "warn":  # a sample that fails while training (changed on disk) is skipped, and counted
            return make_loader(SkipBadSamples(dataset), batch_size, train, self.num_workers, SkippingCollate(self.collate_fn))
        return make_loader(dataset, batch_size, train=train, num_workers=self.num_workers, collate_fn=self.collate_fn)

    def prepare_data(self) -> None:
        if self.shapes_root is not None:
            ensure_shapes(self.shapes_root)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
