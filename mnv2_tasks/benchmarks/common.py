"""Shared measuring helpers for the benchmarks: parameters, MAdds, median latency, the timing options."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_madds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds of one forward pass (convolutions and matmuls: FLOPs / 2), as papers count them."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2


def times_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 20) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def median_latency_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 20) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` calls."""
    return statistics.median(times_ms(fn, warmup, repeats))


def timing_parser(description: str | None, repeats: int = 20, warmup: int = 3) -> argparse.ArgumentParser:
    """The options every benchmark shares: CPU threads, repeats, warm-up, interleaved rounds, batch sizes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per model (median of medians)")
    p.add_argument("--batches", type=int, nargs="*", help="batch sizes (default per task)")
    return p


def cpu_int8_flags() -> str:
    """The CPU's int8 dot-product instructions (VNNI, AVX-VNNI, ARM dot product), read from the CPU flags."""
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    found = [f for f in ("avx512_vnni", "avx_vnni", "asimddp") if f" {f}" in text]
    return ", ".join(found) if found else "none (no VNNI / dot-product flags)"
