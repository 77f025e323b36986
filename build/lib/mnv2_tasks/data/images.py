"""Image reading with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the file, the entry and the fix."""


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Raises ``DataError`` naming the file if it is missing or not a decodable image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found; check the data root and the file list / annotation file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable image ({e}); replace the file or remove it from the data set") from None
