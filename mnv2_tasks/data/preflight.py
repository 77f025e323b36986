"""Pre-flight check of a data set: every bad file found before the first training step, not at the sample that hits it.

Each data set lists what to check (``preflight_items()``: the image, and where there is one the
mask with its class count); ``run_preflight`` checks them in parallel threads:

- images: the header decodes (format, size) and the file is complete: a JPEG ends with its EOI
  marker and a PNG with its IEND chunk, which catches truncated files without decoding them;
- masks: decoded, values within ``0..K-1`` or 255 (ignore), the same size as the image;
- the size an annotation file gives for an image is the size on disk.

``data.on_bad=error`` (default) stops before training with every problem listed;
``data.on_bad=warn`` drops the bad samples, logs each and counts them (``skipped_samples`` in
``metrics.json``). ``data.preflight=false`` turns the check off. A sample that still fails while
training (a file changed on disk) is skipped under ``warn`` (``SkipBadSamples``, ``SkippingCollate``) and stops the
run under ``error``, after ``callbacks.SaveOnDataError`` has saved a checkpoint.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .images import DataError, displayed_size

log = logging.getLogger(__name__)

__all__ = ["PreflightItem", "check_item", "run_preflight", "run_preflight_once", "SkipBadSamples", "SkippingCollate"]

_PNG_END = b"IEND\xaeB`\x82"


@dataclass(frozen=True)
class PreflightItem:
    """One sample to check: its index in the data set, the image, and optionally its mask (with the
    class count) and the (H, W) an annotation file says the image has."""

    index: int
    image: Path
    mask: Path | None = None
    num_classes: int | None = None
    size: tuple[int, int] | None = None


def _complete(path: Path, fmt: str | None) -> bool:
    """Whether a JPEG / PNG file holds its end marker (a truncated file does not); other formats pass."""
    if fmt not in ("JPEG", "PNG"):
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9") if fmt == "JPEG" else tail.endswith(_PNG_END)


def check_item(item: PreflightItem) -> str | None:
    """The problem with one sample, with the file named and the fix, or ``None``."""
    try:
        with Image.open(item.image) as im:
            fmt, stored = im.format, im.size[::-1]
            (w, h), orientation = displayed_size(im)  # read upright (data/images.to_rgb8): the displayed size counts
    except FileNotFoundError:
        return f"{item.image}: image file not found; add it or remove it from the data set"
    except Exception as e:  # noqa: BLE001 - every decoder error is a bad file
        return f"{item.image}: not a decodable image ({type(e).__name__}: {e}); replace the file or remove it from the data set"
    if not _complete(item.image, fmt):
        return f"{item.image}: truncated {fmt} file (no end marker); replace the file or remove it from the data set"
    if item.size is not None and (h, w) != tuple(item.size):
        if tuple(item.size) == stored:
            return (f"{item.image}: the annotations give {stored[1]}x{stored[0]}, the size of the stored pixels, but its EXIF "
                    f"orientation ({orientation}) shows it (and this package reads it) upright as {w}x{h}; labelling tools "
                    "disagree on this: label the upright picture, or remove the orientation tag from the file")
        return (f"{item.image}: the image is {w}x{h} on disk but the annotations say {item.size[1]}x{item.size[0]}; "
                "fix the annotation's width/height (or the image)")
    if item.mask is None:
        return None
    try:
        with Image.open(item.mask) as m:
            mask = np.asarray(m)
    except FileNotFoundError:
        return f"{item.mask}: mask file not found; every image needs its mask"
    except Exception as e:  # noqa: BLE001
        return f"{item.mask}: not a decodable mask ({type(e).__name__}: {e}); replace the file"
    if mask.shape[:2] != (h, w):
        return f"{item.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {item.image.name} is {w}x{h}; fix the mask"
    if item.num_classes is not None:
        values = np.unique(mask)
        bad = values[(values >= item.num_classes) & (values != 255)]
        if bad.size:
            return (f"{item.mask}: mask values {bad.tolist()[:10]} are neither a class id (0..{item.num_classes - 1}) nor "
                    "the ignore label 255; fix the mask or set data.num_classes")
    return None


def run_preflight(items: Sequence[PreflightItem], what: str, workers: int | None = None,
                  check: Callable[[PreflightItem], str | None] = check_item) -> dict[int, str]:
    """``{index: problem}`` of every bad sample among ``items`` (``what`` names the set in the log)."""
    workers = max(1, min(8, workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        problems = {item.index: p for item, p in zip(items, pool.map(check, items, chunksize=64)) if p}
    log.info("pre-flight check of %s: %d samples, %d bad", what, len(items), len(problems))
    return problems


def run_preflight_once(items: Sequence[PreflightItem], what: str, workers: int | None = None) -> dict[int, str]:
    """``run_preflight``, once per job under a cluster launch (SLURM, torchrun: ``launch.job_key``): local rank 0
    checks and writes the result to ``<cache>/preflight/<items and job>.json`` (under a file lock, so that nodes
    sharing that disk check once), the other ranks wait for it and read it. One process checks directly."""
    import hashlib
    import json

    from ..launch import cache_dir, job_key, once_per_node

    job = job_key()
    if job is None:
        return run_preflight(items, what, workers)
    listing = repr([(i.index, str(i.image), str(i.mask), i.num_classes, i.size) for i in items])
    digest = hashlib.sha1(f"{job}\n{listing}".encode()).hexdigest()[:16]
    result = cache_dir() / "preflight" / f"{digest}.json"
    made = []

    def check_and_write() -> None:
        problems = run_preflight(items, what, workers)
        result.parent.mkdir(parents=True, exist_ok=True)
        tmp = result.with_name(f"{result.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"what": what, "job": job, "problems": {str(k): v for k, v in problems.items()}}))
        os.replace(tmp, result)
        made.append(problems)

    once_per_node(f"check {what} (pre-flight)", result.is_file, check_and_write, lock=result.with_suffix(".lock"))
    if made:
        return made[0]
    problems = {int(k): v for k, v in json.loads(result.read_text())["problems"].items()}
    log.info("pre-flight check of %s: %d samples, %d bad (checked once for job %s: %s)", what, len(items), len(problems),
             job, result)
    return problems


class SkipBadSamples(Dataset):
    """``data.on_bad=warn`` while training: a sample whose files fail to load (changed on disk after the
    pre-flight check) is logged and left out of its batch (``skipping_collate`` counts it)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        try:
            return self.dataset[idx]
        except DataError as e:
            log.warning("skipped a bad sample (data.on_bad=warn): %s", e)
            return None

    def __getattr__(self, name: str):  # the wrapped set's attributes (ann_file, label_to_cat_id, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SkippingCollate:
    """``collate`` over the samples that loaded; the batch records how many did not (``batch["skipped"]``).
    A class, not a closure, so that spawned loader workers can pickle it."""

    def __init__(self, collate: Callable | None) -> None:
        self.collate = collate

    def __call__(self, samples: list):
        from torch.utils.data import default_collate

        good = [s for s in samples if s is not None]
        if not good:
            raise DataError(f"every sample of a batch of {len(samples)} failed to load (see the warnings above); check the data set")
        batch = (self.collate or default_collate)(good)
        batch["skipped"] = len(samples) - len(good)
        return batch
