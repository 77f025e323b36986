"""``browse(cfg)``: training (or validation) samples as the network receives them, after augmentation, with their
ground truth drawn (boxes with class names, masks, the class), in one PNG grid: look at the labels before training
on them (MMDetection's ``browse_dataset.py``). ``mnv2-browse`` / ``tools/browse.py`` is its command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import classes_from_data

__all__ = ["browse"]

log = logging.getLogger(__name__)


def browse(cfg: DictConfig, num_images: int = 16, split: str = "train", out: str | Path | None = None) -> Path:
    """Draw ``num_images`` samples of ``split`` (``train``: augmented as training sees them; ``val``) into a grid PNG
    (default ``<paths.output_dir>/browse_<split>.png``); returns its path."""
    from .visualize import caption, draw_prediction, grid, to_frame

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.get("seed") is not None:  # the augmentations a run with this seed draws first
        import lightning as L

        L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    classes_from_data(cfg, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit" if split == "train" else "validate")
    dataset = datamodule.train_set if split == "train" else datamodule.val_set
    spec = datamodule.input_spec()
    from tqdm.auto import tqdm

    tiles = []
    for k in tqdm(range(min(num_images, len(dataset))), desc=f"drawing {split} samples", leave=False):
        sample = dataset[k]
        frame = to_frame(sample["image"], spec["mean"], spec["std"])
        name = (sample.get("meta") or {}).get("file_name", f"#{k}")
        tiles.append(caption(draw_prediction(frame, datamodule.truth_of(sample), 0.0), str(name)[-24:]))
    if not tiles:
        raise ValueError(f"the {split} split is empty")
    out = Path(out) if out else Path(cfg.paths.output_dir) / f"browse_{split}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    grid(tiles).save(out)
    log.info("%d %s samples drawn: %s", len(tiles), split, out)
    return out
