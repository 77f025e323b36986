"""The error a model or weights file that cannot be loaded as asked raises (shared by the readers of every format)."""

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as asked; the message names the file and the fix."""
