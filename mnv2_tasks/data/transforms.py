"""Albumentations pipelines: built from Hydra config lists, with normalization and tensor conversion appended."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2

# ImageNet statistics, as torchvision's and timm's pretrained MobileNetV2 expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def compose(
    transforms: Sequence[A.BasicTransform] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **compose_kwargs,
) -> A.Compose:
    """``transforms`` (already built, e.g. by Hydra) + Normalize + ToTensorV2.

    ``compose_kwargs`` go to ``A.Compose`` (``bbox_params`` for detection, ...). Albumentations draws from its own
    generator, which no global seed reaches: it is seeded here from torch's seed (``seed_everything``), so a run
    with ``seed=...`` augments the same way every time, and loader workers reseed it each (``loaders.seed_worker``).
    """
    import torch

    compose_kwargs.setdefault("seed", torch.initial_seed() % 2**32)
    return A.Compose([*(transforms or []), A.Normalize(mean=mean, std=std), ToTensorV2()], **compose_kwargs)


def classification_train(size: int, scale: tuple[float, float] = (0.35, 1.0), hflip: float = 0.5, color_jitter: float = 0.3) -> list:
    """The usual ImageNet training recipe: random resized crop, flip, colour jitter."""
    return [
        A.RandomResizedCrop(size=(size, size), scale=scale),
        A.HorizontalFlip(p=hflip),
        A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.0, p=0.8 if color_jitter else 0.0),
    ]


def classification_eval(size: int, crop_fraction: float = 0.875) -> list:
    """Resize the short side to size / crop_fraction, then centre-crop ``size`` (ImageNet evaluation)."""
    return [A.SmallestMaxSize(max_size=round(size / crop_fraction)), A.CenterCrop(height=size, width=size)]
