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


def same_file_twice(files, source) -> None:
    """Refuse a split that reaches one image file twice (a duplicate entry, or a link to a file already listed):
    it would be trained and scored twice without a word. Names both entries and the fix."""
    import os

    seen: dict[str, str] = {}
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            how = "listed twice" if os.path.abspath(seen[real]) == os.path.abspath(str(f)) else f"the same file as {seen[real]}"
            raise DataError(f"{source}: {f} is {how} ({real}); each image must be in a split once: remove the duplicate "
                            "entry or link")
        seen[real] = str(f)
