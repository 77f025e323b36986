"""Speed and size, measured side by side against a reference in the same run; prints markdown.

    python tools/benchmark.py                      # every task
    python tools/benchmark.py --task classification --threads 2 --repeats 30
    python tools/benchmark.py --task deploy --deploy-task detection --deploy-ckpt detection=det.ckpt

Latency is the median over ``--repeats`` runs after warm-up, on the CPU with ``--threads``
threads; ratios compare models measured in this same process, so machine noise cancels.
"""

from __future__ import annotations

import importlib
import platform
from pathlib import Path

import torch

from . import deploy, detection
from .common import timing_parser

# the benchmark tables (one module each): a task's model against its reference, and the deploy table
BENCHMARKS = ("classification", "detection", "segmentation", "deploy")


def parser():
    p = timing_parser(__doc__)
    p.add_argument("--task", choices=BENCHMARKS, action="append", help="repeatable; default: all")
    p.add_argument("--out", help="also write the markdown here")
    detection.add_options(p)
    deploy.add_options(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    header = (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
              f"{args.threads} threads, median of {args.repeats} runs x {args.rounds} rounds")
    sections = []
    for task in args.task or BENCHMARKS:
        body = importlib.import_module(f"{__package__}.{task}").run(args)
        sections.append(f"### {task}\n\n{body}\n")
        print(sections[-1], flush=True)
    if args.out:
        Path(args.out).write_text(f"{header}\n\n" + "\n".join(sections))
    print(header)
