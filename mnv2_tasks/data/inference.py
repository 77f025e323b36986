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
        self._fast = _fast_params(self.transform.transforms)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got shape {frame.shape} and dtype {frame.dtype}")
        if self._fast is not None:  # the same resize and the same normalisation table, in two OpenCV calls
            import cv2

            size, lut = self._fast
            if size is not None and (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            # (h, w, 3) float32 viewed as (3, h, w), as ToTensorV2 gives it: channels-last in memory
            return torch.from_numpy(cv2.LUT(np.ascontiguousarray(frame), lut)).permute(2, 0, 1)
        return torch.as_tensor(self.transform(image=frame)["image"]).float()


def _fast_params(transforms) -> tuple | None:
    """For the usual eval pipeline (an optional bilinear ``Resize``, ``Normalize``, ``ToTensorV2``): the output
    (W, H) (``None``: the frame's) and the (1, 256, 3) float32 table that is the pipeline's own ``Normalize`` of every
    uint8 value (albumentations normalises uint8 images through such a table), so the result is the pipeline's, bit
    for bit; ``None`` for any other pipeline, which then runs as it is."""
    import cv2
    from albumentations.pytorch import ToTensorV2

    names = [type(t).__name__ for t in transforms]
    if names not in (["Resize", "Normalize", "ToTensorV2"], ["Normalize", "ToTensorV2"]) or not isinstance(transforms[-1], ToTensorV2):
        return None
    size = None
    if names[0] == "Resize":
        r = transforms[0]
        if r.interpolation != cv2.INTER_LINEAR or r.p != 1 or getattr(r, "area_for_downscale", None):
            return None
        size = (int(r.width), int(r.height))
    norm = transforms[-2]
    if norm.normalization != "standard" or norm.p != 1:  # a fixed value per uint8 level (not the image's statistics)
        return None
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, 3): every value, every channel
    lut = np.ascontiguousarray(np.asarray(A.Compose([norm])(image=ramp)["image"], dtype=np.float32))
    return size, lut
