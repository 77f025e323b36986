"""Segmentation pipelines (albumentations, image + mask) and the batch collation.

255 is the ignore label everywhere: padding added by augmentation is 255 in the mask, and
masks are only ever resized with nearest-neighbour interpolation (``check_mask_interpolation``
refuses a pipeline that would do otherwise), so no transform can invent a class id.
"""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from .transforms import IMAGENET_MEAN, IMAGENET_STD, compose

__all__ = ["IGNORE_INDEX", "segmentation_train", "segmentation_eval", "seg_compose", "check_mask_interpolation", "seg_collate"]

IGNORE_INDEX = 255
# image padding value: the ImageNet mean in pixels, so that padding normalizes to ~0
_MEAN_PIXEL = tuple(round(255 * m) for m in IMAGENET_MEAN)
_NEAREST = (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT)


def segmentation_train(
    crop_size: int,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    color_jitter: float = 0.3,
) -> list[A.BasicTransform]:
    """DeepLab's training recipe: random scale, pad to ``crop_size`` (mask 255), random crop, flip, colour jitter."""
    return [
        A.RandomScale(scale_limit=(scale[0] - 1.0, scale[1] - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=crop_size, min_width=crop_size, position="random", border_mode=cv2.BORDER_CONSTANT,
                      fill=_MEAN_PIXEL, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=hflip),
        A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.02,
                      p=0.8 if color_jitter else 0.0),
    ]


def segmentation_eval() -> list[A.BasicTransform]:
    """Evaluation at full resolution: no geometric transform (normalization is appended by ``seg_compose``)."""
    return []


def check_mask_interpolation(transforms: Sequence[A.BasicTransform]) -> None:
    """Raise ``ValueError`` if a transform would resize masks with anything but nearest-neighbour."""
    for t in transforms:
        inner = getattr(t, "transforms", None)  # OneOf, Sequential, ...
        if inner is not None:
            check_mask_interpolation(inner)
        mi = getattr(t, "mask_interpolation", None)
        if mi is not None and mi not in _NEAREST:
            raise ValueError(
                f"{type(t).__name__} resizes masks with interpolation {mi}; segmentation masks must use "
                f"nearest-neighbour (mask_interpolation=0, cv2.INTER_NEAREST), or class ids get blended"
            )
        # transforms that fill new pixels (padding, rotation) must fill masks with the ignore label
        fill_mask = getattr(t, "fill_mask", None)
        fills = getattr(t, "border_mode", cv2.BORDER_CONSTANT) == cv2.BORDER_CONSTANT and getattr(t, "pad_if_needed", True)
        if fill_mask is not None and fills and np.any(np.asarray(fill_mask) != IGNORE_INDEX):
            raise ValueError(f"{type(t).__name__} fills masks with {fill_mask}; new mask pixels must be the ignore label "
                             f"{IGNORE_INDEX} (fill_mask=255)")


def seg_compose(transforms: Sequence[A.BasicTransform] | None, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """``transforms`` (checked for mask interpolation) + Normalize + ToTensorV2; call with ``image=, mask=``."""
    transforms = list(transforms or [])
    check_mask_interpolation(transforms)
    return compose(transforms, mean=mean, std=std)


def seg_collate(samples: list[dict], pad_multiple: int = 1) -> dict:
    """Stack samples ``{"image": (3, H, W), "target": (H, W), "meta": dict}`` into a batch.

    Images of different sizes (full-resolution evaluation) are padded at the bottom and right
    to the largest size in the batch (rounded up to ``pad_multiple``): images with 0 (the
    normalized mean), masks with 255, so padded pixels never count. Returns
    ``{"image": (N, 3, H, W) float, "target": (N, H, W) int64, "meta": [dict, ...]}``.
    """
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)
    h, w = -(-h // pad_multiple) * pad_multiple, -(-w // pad_multiple) * pad_multiple
    images = samples[0]["image"].new_zeros((len(samples), samples[0]["image"].shape[0], h, w))
    targets = torch.full((len(samples), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, s in enumerate(samples):
        ih, iw = s["image"].shape[-2:]
        images[i, :, :ih, :iw] = s["image"]
        targets[i, :ih, :iw] = s["target"]
    return {"image": images, "target": targets, "meta": [s.get("meta", {}) for s in samples]}
