"""What the pre-flight data check costs: seconds per 10,000 images, against reading them once.

    python -m mnv2_tasks.benchmarks.preflight                  # 10,000 JPEGs of 640x480 (COCO-like)
    python -m mnv2_tasks.benchmarks.preflight --images 2000 --size 160 --workers 2

Writes ``--images`` JPEGs (and as many PNG masks with ``--masks``) into a temporary folder, then
times ``run_preflight`` over them (header, completeness, and with masks the decoded values) and
one full decode of every image (``read_rgb``, what an epoch costs at least), on ``--workers`` threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["run"]


def run(args) -> str:
    from concurrent.futures import ThreadPoolExecutor

    from ..data.images import read_rgb
    from ..data.preflight import PreflightItem, run_preflight

    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_preflight_"))
    w, h = (args.size * 4 // 3, args.size) if args.size >= 320 else (args.size, args.size)
    base = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    items = []
    for i in range(args.images):
        img = tmp / f"{i:06d}.jpg"
        Image.fromarray(np.roll(base, i, axis=1)).save(img, quality=90)
        mask = None
        if args.masks:
            mask = tmp / f"{i:06d}.png"
            Image.fromarray((np.arange(h * w).reshape(h, w) % 5).astype(np.uint8)).save(mask)
        items.append(PreflightItem(i, img, mask, 5 if args.masks else None, (h, w)))
    t0 = time.perf_counter()
    problems = run_preflight(items, str(tmp), args.workers)
    t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda it: read_rgb(it.image), items, chunksize=64))
    t_read = time.perf_counter() - t0
    per10k = 10000 / args.images
    return "\n".join([
        f"{args.images} JPEGs of {w}x{h}{' + PNG masks' if args.masks else ''}, {args.workers} threads, {len(problems)} bad",
        "", "| pass | seconds | per 10,000 images |", "|---|---:|---:|",
        f"| pre-flight check | {t_check:.2f} | {t_check * per10k:.2f} s |",
        f"| decoding every image once | {t_read:.2f} | {t_read * per10k:.2f} s |",
        "", f"the check costs {100 * t_check / t_read:.1f}% of one decode of the set (an epoch also augments and trains)",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--size", type=int, default=480, help="image height (width 4/3 of it from 320 up)")
    p.add_argument("--masks", action="store_true", help="PNG masks too (decoded and checked)")
    p.add_argument("--workers", type=int, default=2)
    print(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
