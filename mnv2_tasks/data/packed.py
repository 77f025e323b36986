"""Annotation tables that loader workers share instead of copying.

A forked ``DataLoader`` worker shares its parent's memory page by page until it writes to a page. Python objects
are written to whenever they are read (reference counts) and swept by the garbage collector, so a data set held as
one dict per image and per box is copied into every worker bit by bit: hundreds of MB per worker on COCO. Held as
a few NumPy arrays and one byte buffer (the way MMEngine serialises its data sets), the pages are only ever read,
and stay shared. ``python -m mnv2_tasks.benchmarks.coco_scale --part data`` measures it.
"""

from __future__ import annotations

import pickle
from typing import Iterable, Iterator

import numpy as np

__all__ = ["PackedList", "ImageTable"]


class PackedList:
    """A list of plain objects (dicts of str, int, float, lists) pickled into one uint8 array with int64 offsets;
    ``packed[k]`` unpickles entry ``k`` (a fresh copy: changing it changes nothing here)."""

    def __init__(self, items: Iterable) -> None:
        blobs = [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]
        self.offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in blobs], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int):
        return pickle.loads(self.buffer[self.offsets[k]:self.offsets[k + 1]])

    def __iter__(self) -> Iterator:
        return (self[k] for k in range(len(self)))


class ImageTable:
    """The ``images`` entries of a COCO file: packed entries, their integer ids as an array, and lookups by id
    (a binary search over the sorted ids). Read-only; reads like a ``{image_id: entry}`` dict."""

    def __init__(self, entries: list[dict]) -> None:
        self._entries = PackedList(entries)
        self._ids = np.array([int(e["id"]) for e in entries], dtype=np.int64)
        self._order = np.argsort(self._ids, kind="stable")
        self._sorted = self._ids[self._order]

    def position(self, image_id) -> int | None:
        """The entry's position in the file's ``images`` list, or None for an id the file does not have."""
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
            return None
        j = int(np.searchsorted(self._sorted, image_id))
        return int(self._order[j]) if j < len(self._sorted) and self._sorted[j] == image_id else None

    def entry(self, k: int) -> dict:
        return self._entries[k]

    def id_at(self, k: int) -> int:
        return int(self._ids[k])

    def file_name(self, k: int) -> str:
        return str(self.entry(k)["file_name"])

    # the dict-like reading: table[image_id], image_id in table, iteration over ids
    def __getitem__(self, image_id) -> dict:
        k = self.position(image_id)
        if k is None:
            raise KeyError(image_id)
        return self.entry(k)

    def __contains__(self, image_id) -> bool:
        return self.position(image_id) is not None

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[int]:
        return (int(i) for i in self._ids)

    def values(self) -> Iterator[dict]:
        return iter(self._entries)
