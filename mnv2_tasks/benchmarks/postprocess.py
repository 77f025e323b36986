"""What a detector's post-processing costs after the graph: each file's ``run`` (the graph alone) against its
``__call__`` (graph + reading back: ``select_detections`` for the NMS-free files of ExecuTorch, LiteRT, NCNN), at batch
1, in alternating rounds in one process; prints a markdown table.

    python -m mnv2_tasks.benchmarks.postprocess <dir or files> [--size 192] [--image <embedded root>] [--rounds 5]

Point it at the files of a deploy benchmark run (``tools/benchmark.py --task deploy --deploy-out DIR``): their
post-processing preset is the one they were written with (``--deploy-postprocess``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from ..quant.runners import open_model
from ..quant.targets import model_suffixes
from .common import times_ms


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="exported int8 files, or folders (their *.int8.* files)")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--image", default=None, help="a folder of .jpg images (the first is used); default: random input")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    files = []
    for path in map(Path, args.paths):
        files += sorted(f for f in path.glob("*.int8.*") if any(f.name.endswith(s) for s in model_suffixes())) \
            if path.is_dir() else [path]
    torch.set_num_threads(args.threads)
    if args.image:
        from ..data.images import read_rgb
        from ..data.inference import EvalPreprocess

        first = sorted(Path(args.image).rglob("*.jpg"))[0]  # prepared as evaluation prepares it (ImageNet mean, std)
        x = EvalPreprocess({"image_size": args.size})(read_rgb(first))[None].contiguous()
    else:
        x = torch.randn(1, 3, args.size, args.size)
    models = {f.name: open_model(f, args.threads) for f in files}
    rounds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, m in models.items():
            for what, fn in (("graph", lambda m=m: m.run(x)), ("end_to_end", lambda m=m: m(x))):
                rounds.setdefault((name, what), []).append(statistics.median(times_ms(fn, 3, args.repeats)))
    lines = ["| file | outputs | graph (ms) | end to end (ms) | after the graph |", "|---|---|---:|---:|---:|"]
    for name, m in models.items():
        g, e = (statistics.median(rounds[(name, w)]) for w in ("graph", "end_to_end"))
        lines.append(f"| {name} | {m.format} | {g:.2f} | {e:.2f} | {e - g:.2f} ms ({(e - g) / e:.0%}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
