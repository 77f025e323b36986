"""Image reading with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the file, the entry and the fix."""


# integer image modes wider than 8 bits (16-bit gray PNG/TIFF from thermal, machine-vision and depth cameras)
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


ORIENTATION = 0x0112  # the EXIF tag
TURNED = frozenset({5, 6, 7, 8})  # orientations that show the stored picture turned by 90 degrees


def displayed_size(im: Image.Image) -> tuple[tuple[int, int], int]:
    """``((width, height), orientation)`` of ``im`` as ``to_rgb8`` reads it (upright), from the header only."""
    orientation = im.getexif().get(ORIENTATION, 1)
    w, h = im.size
    return ((h, w) if orientation in TURNED else (w, h)), orientation


def to_rgb8(im: Image.Image) -> np.ndarray:
    """A decoded picture as (H, W, 3) uint8 RGB, as training, evaluation and the Predictor all read files:

    - the EXIF orientation applied (a phone or drone JPEG with Orientation=6 is upright, not sideways);
    - 16-bit images scaled by the 16-bit range, ``round(v * 255 / 65535)``, not clipped to white: a 16-bit copy of an
      8-bit picture (``v * 257``) decodes to the same pixels; a 12-bit sensor in a 16-bit file comes out dark, not white;
    - palette, gray, gray + alpha, CMYK and RGBA through Pillow's conversion to RGB (alpha dropped).
    """
    if im.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image: only call it to turn one
        im = ImageOps.exif_transpose(im)
    if im.mode in _WIDE_MODES:
        wide = np.asarray(im, dtype=np.float64)
        gray = np.clip(np.rint(wide * (255.0 / _WIDE_MODES[im.mode])), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    return np.asarray(im.convert("RGB"))


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, decoded by ``to_rgb8`` (EXIF orientation, 16-bit range). Raises ``DataError`` naming the
    file if it is missing or not a decodable image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found; check the data root and the file list / annotation file")
    try:
        with Image.open(path) as im:
            return to_rgb8(im)
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
