"""Inference preprocessing that is the evaluation's: the data module's eval transforms, recorded in the checkpoint.

``TaskDataModule.input_spec()`` records ``eval_transform`` (albumentations' ``to_dict`` of the
validation pipeline: resize, crop, normalisation, tensor conversion), and ``EvalPreprocess``
rebuilds exactly that pipeline for a frame of any size, so what a user sees on a frame is what
the reported metric measured. Files without it (older checkpoints, plain weight files) get the
pipeline their ``image_size`` / ``mean`` / ``std`` describe.
"""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch

from .transforms import IMAGENET_MEAN, IMAGENET_STD, compose

__all__ = ["EvalPreprocess", "transform_spec"]


def transform_spec(transform: A.Compose) -> dict:
    """A pipeline as JSON-able data (``A.to_dict``), for checkpoints and ONNX metadata."""
    return A.to_dict(transform)


def _size_pipeline(image_size, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    if image_size is None:  # full resolution
        return compose([], mean, std)
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    return compose([A.Resize(height=h, width=w)], mean, std)


class EvalPreprocess:
    """(H, W, 3) uint8 RGB frame -> (3, h, w) float tensor, as the model's validation data was prepared."""

    def __init__(self, input_spec: dict) -> None:
        spec = input_spec.get("eval_transform")
        if spec:
            # the same transforms, without a detection pipeline's box bookkeeping (a frame has no boxes)
            self.transform = A.Compose(A.from_dict(spec).transforms)
        else:
            self.transform = _size_pipeline(input_spec.get("image_size"), input_spec.get("mean") or IMAGENET_MEAN,
                                            input_spec.get("std") or IMAGENET_STD)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got shape {frame.shape} and dtype {frame.dtype}")
        return torch.as_tensor(self.transform(image=frame)["image"]).float()
