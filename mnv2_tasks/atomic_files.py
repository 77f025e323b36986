"""Writes that cannot be torn: a file a run relies on is written beside its destination and renamed into place.

``atomic_write(path, data)`` writes ``data`` to a temporary file in ``path``'s own directory, flushes and
fsyncs it, renames it over ``path`` (``os.replace``: atomic within one filesystem) and fsyncs the directory,
as SQLite and etcd make durable writes. A write that fails (a full disk, a read-only directory) or is killed
leaves the previous file as it was; a failure says why in one line (disk full: how much was needed).

``AtomicCheckpointIO`` is Lightning's checkpoint I/O that way, and it refuses a non-finite network
(``divergence.py``). Lightning's own (``TorchCheckpointIO``, through
fsspec's local transaction) writes a temporary file in the *system* temporary directory and moves it over the
checkpoint: on another filesystem (a data disk, NFS, a tmpfs ``/tmp``) that move is a copy, and a kill during
it leaves ``last.ckpt`` truncated and the previous epoch gone.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["atomic_write", "AtomicCheckpointIO", "WriteError", "check_writable", "check_free_space"]


class WriteError(OSError):
    """A file that could not be written; the previous one is intact. The message names the file and the fix."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every OS opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` at ``path``, all of it or nothing: the previous file stays until the new one is complete on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        if e.errno == errno.ENOSPC:
            raise WriteError(e.errno, f"{path}: disk full while writing {len(data) / 2**20:.1f} MB ({kept}); free space on "
                                      f"{path.parent} or point paths.output_dir elsewhere") from None
        raise WriteError(e.errno, f"{path}: cannot write ({e.strerror or e}; {kept}); check that {path.parent} is "
                                  "writable, or point paths.output_dir elsewhere") from None
    _fsync_dir(path.parent)
    return path


def check_writable(directory: str | os.PathLike) -> None:
    """Before a run starts: ``directory`` can be created and written; otherwise a ``WriteError`` naming it and the fix."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise WriteError(e.errno, f"{directory}: the run cannot write its checkpoints there ({e.strerror or e}); "
                                  "point paths.output_dir (or hydra.run.dir) at a writable directory") from None


def check_free_space(directory: str | os.PathLike, needed_bytes: int) -> None:
    """``directory`` has ``needed_bytes`` free (the checkpoints the run will keep); otherwise a ``WriteError``."""
    import shutil

    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise WriteError(errno.ENOSPC, f"{directory}: {free / 2**20:.1f} MB free, the run's checkpoints need about "
                                       f"{needed_bytes / 2**20:.1f} MB; free space there or point paths.output_dir elsewhere")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints serialised in memory, then written with ``atomic_write`` beside their destination."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        from .divergence import DivergedError, non_finite_tensors

        bad = non_finite_tensors(checkpoint.get("state_dict") or {})
        if bad:  # a diverged network is never written, so it never replaces a finite checkpoint
            raise DivergedError(f"{path}: not written: {len(bad)} weight / BatchNorm-statistics tensors hold inf or NaN "
                                f"({bad[:3]}); the run diverged (lower the learning rate)")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getvalue())
