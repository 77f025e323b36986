"""DataLoader construction shared by every task's data module."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset


def eval_sampler(dataset: Dataset):
    """Under DDP, a sampler that splits the set across ranks without padding.

    Lightning's default ``DistributedSampler`` repeats samples to even out the ranks, which
    would count them twice in validation metrics; this one gives every sample to exactly one rank.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return None


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """Training loaders shuffle (Lightning adds a DistributedSampler under DDP); eval loaders never pad."""
    sampler = None if train else eval_sampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=(train and len(dataset) > batch_size) if drop_last is None else drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
