"""SSD-style detection augmentation with albumentations: photometric distortion, zoom out,
IoU-aware random crop, horizontal flip, resize to the model size.

Boxes travel as ``pascal_voc`` (xyxy pixels) with a ``labels`` field; albumentations clips them
and drops degenerate ones at the end of the pipeline (``bbox_params``), and the data set checks once
more. Every transform here can be listed in a data config with ``_target_``.
"""

from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from .transforms import IMAGENET_MEAN, IMAGENET_STD, compose

__all__ = ["MinIoURandomCrop", "ZoomOut", "ssd_photometric", "ssd_train_transforms", "detection_bbox_params", "detection_pipeline"]


class MinIoURandomCrop(BaseCrop):
    """SSD's random crop (Liu et al., 2016, sec. 2.2): pick a minimum IoU from ``min_ious`` (or no crop),
    then try up to ``max_trials`` crops of ``scale`` x the image side with aspect ``aspect`` until one
    overlaps some box with at least that IoU. Boxes whose centre leaves the crop are dropped.
    """

    def __init__(
        self,
        min_ious: Sequence[float | None] = (None, 0.1, 0.3, 0.5, 0.7, 0.9),
        scale: tuple[float, float] = (0.3, 1.0),
        aspect: tuple[float, float] = (0.5, 2.0),
        max_trials: int = 40,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_ious = [None if v is None else float(v) for v in min_ious]
        self.scale, self.aspect, self.max_trials = tuple(scale), tuple(aspect), max_trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        full = {"crop_coords": (0, 0, w, h)}
        bboxes = np.asarray(data.get("bboxes", []), dtype=np.float64)
        # albumentations keeps boxes normalized, with label columns after the 4 coordinates
        boxes = bboxes[:, :4] * np.array([w, h, w, h]) if bboxes.size else np.zeros((0, 4))
        min_iou = self.min_ious[self.py_random.randrange(len(self.min_ious))]
        if min_iou is None:
            return full
        # all trials drawn at once, the first acceptable one taken: SSD's loop, without a Python iteration per trial
        rng, n = self.random_generator, self.max_trials
        cw = rng.uniform(*self.scale, n) * w
        ch = rng.uniform(*self.scale, n) * h
        ok = (cw / ch >= self.aspect[0]) & (cw / ch <= self.aspect[1])
        cw = np.maximum(1, np.round(cw)).astype(np.int64)
        ch = np.maximum(1, np.round(ch)).astype(np.int64)
        x0 = (rng.uniform(0, 1, n) * (w - cw + 1)).astype(np.int64)
        y0 = (rng.uniform(0, 1, n) * (h - ch + 1)).astype(np.int64)
        crops = np.stack([x0, y0, np.minimum(w, x0 + cw), np.minimum(h, y0 + ch)], 1)  # (T, 4)
        if len(boxes):
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
            inside = ((centres[None, :, 0] > crops[:, None, 0]) & (centres[None, :, 0] < crops[:, None, 2])
                      & (centres[None, :, 1] > crops[:, None, 1]) & (centres[None, :, 1] < crops[:, None, 3]))
            ok &= inside.any(1) & (_iou(crops.astype(np.float64), boxes).max(1) >= min_iou)
        hits = np.flatnonzero(ok)
        if not len(hits):
            return full
        return {"crop_coords": tuple(int(v) for v in crops[hits[0]])}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        if len(bboxes):
            h, w = params["shape"][:2]
            cx = (bboxes[:, 0] + bboxes[:, 2]) / 2 * w
            cy = (bboxes[:, 1] + bboxes[:, 3]) / 2 * h
            x0, y0, x1, y1 = crop_coords
            bboxes = bboxes[(cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)


def _iou(crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, M) IoU of every crop (T, 4) with every box (M, 4), xyxy."""
    lt = np.maximum(crops[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(crops[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_c = (crops[:, 2:] - crops[:, :2]).prod(-1)
    area_b = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    return inter / np.maximum(area_c[:, None] + area_b[None, :] - inter, 1e-9)


def ZoomOut(max_ratio: float = 4.0, p: float = 0.5, fill: Sequence[float] | None = None) -> A.BasicTransform:
    """SSD's "expand": place the image on a canvas up to ``max_ratio`` times its side, at a random
    position, filled with the mean colour (boxes shrink with the image once resized)."""
    per_side = (max_ratio - 1.0) / 2.0
    fill = tuple(int(round(255 * m)) for m in IMAGENET_MEAN) if fill is None else tuple(fill)
    return A.CropAndPad(percent=(0.0, per_side), keep_size=False, sample_independently=True,
                        border_mode=cv2.BORDER_CONSTANT, fill=fill, p=p)


def ssd_photometric(p: float = 0.8) -> A.BasicTransform:
    """SSD's photometric distortion: brightness, contrast, saturation and hue, in one of two orders."""
    return A.OneOf([
        A.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05, p=1.0),
        A.Sequential([A.RandomBrightnessContrast(0.125, 0.5, p=1.0), A.HueSaturationValue(18, 30, 0, p=1.0)], p=1.0),
    ], p=p)


def ssd_train_transforms(
    photometric: float = 0.8,
    zoom_out: float = 4.0,
    zoom_out_p: float = 0.5,
    min_iou_crop_p: float = 0.8,
    hflip: float = 0.5,
) -> list:
    """The SSD recipe (before the resize ``detection_pipeline`` appends); ``0`` turns a part off."""
    out: list = []
    if photometric:
        out.append(ssd_photometric(photometric))
    if zoom_out_p and zoom_out > 1.0:
        out.append(ZoomOut(zoom_out, p=zoom_out_p))
    if min_iou_crop_p:
        out.append(MinIoURandomCrop(p=min_iou_crop_p))
    if hflip:
        out.append(A.HorizontalFlip(p=hflip))
    return out


def detection_bbox_params(min_size: float = 1.0) -> A.BboxParams:
    """xyxy pixel boxes with a ``labels`` field; clipped, and boxes under ``min_size`` px (at the model's
    input size) dropped, once at the end of the pipeline. Checking after every transform cost a quarter
    of a detection sample's augmentation time on the embedded data (BENCHMARKS.md, issue 15), and no
    transform here needs it: ``ZoomOut`` keeps boxes inside the canvas, ``MinIoURandomCrop`` drops the
    boxes whose centre leaves the crop itself, and a box that a crop leaves tiny may grow again at the resize."""
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, filter_invalid_bboxes=True,
                        min_width=min_size, min_height=min_size, check_each_transform=False)


def detection_pipeline(
    transforms: Sequence[A.BasicTransform] | None,
    size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    min_size: float = 1.0,
) -> A.Compose:
    """``transforms`` + resize to ``size`` (int or (H, W), aspect not kept, as SSD) + Normalize + ToTensorV2."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return compose([*(transforms or []), A.Resize(height=h, width=w)], mean, std, bbox_params=detection_bbox_params(min_size))
