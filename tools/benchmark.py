"""Speed and size, measured side by side against a reference in the same run; prints markdown.

    python tools/benchmark.py                      # every task
    python tools/benchmark.py --task classification --threads 2 --repeats 30

Latency is the median over ``--repeats`` runs after warm-up, on the CPU with ``--threads``
threads; ratios compare models measured in this same process, so machine noise cancels.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import count_madds, count_params, median_latency_ms, timing_parser  # noqa: E402

TASKS = ("classification", "detection", "segmentation", "deploy")


def bench_classification(args) -> str:
    """Our MobileNetV2 against torchvision's mobilenet_v2 (width 1.0, 224x224): params, MAdds, latency."""
    import torchvision

    from mnv2_tasks.models import MobileNetV2

    ours, ref = MobileNetV2().eval(), torchvision.models.mobilenet_v2().eval()
    rows = []
    with torch.inference_mode():
        for batch in args.batches or (1, 32):
            x = torch.randn(batch, 3, 224, 224)
            # interleave the two models so that drift in machine load hits both alike
            t_ours, t_ref = [], []
            for _ in range(args.rounds):
                t_ours.append(median_latency_ms(lambda: ours(x), args.warmup, args.repeats))
                t_ref.append(median_latency_ms(lambda: ref(x), args.warmup, args.repeats))
            a, b = sorted(t_ours)[len(t_ours) // 2], sorted(t_ref)[len(t_ref) // 2]
            rows.append((batch, a, b, a / b))
    x1 = torch.randn(1, 3, 224, 224)
    lines = [
        "| model | params | MAdds @224 |",
        "|---|---:|---:|",
        f"| mnv2_tasks MobileNetV2 1.0 | {count_params(ours):,} | {count_madds(ours, x1) / 1e6:.1f}M |",
        f"| torchvision mobilenet_v2 | {count_params(ref):,} | {count_madds(ref, x1) / 1e6:.1f}M |",
        "",
        "| batch | ours (ms) | torchvision (ms) | ratio ours/torchvision |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {b} | {a:.2f} | {r:.2f} | {q:.3f} |" for b, a, r, q in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = timing_parser(__doc__)
    p.add_argument("--task", choices=TASKS, action="append", help="repeatable; default: all")
    p.add_argument("--out", help="also write the markdown here")
    args, rest = p.parse_known_args(argv)
    args.extra = rest
    torch.set_num_threads(args.threads)
    header = (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
              f"{args.threads} threads, median of {args.repeats} runs x {args.rounds} rounds")
    sections = []
    for task in args.task or TASKS:
        if task == "classification":
            body = bench_classification(args)
        else:
            try:
                body = importlib.import_module(f"bench_{task}").run(args)
            except ModuleNotFoundError as e:
                body = f"(not available: {e})"
        sections.append(f"### {task}\n\n{body}\n")
        print(sections[-1], flush=True)
    if args.out:
        Path(args.out).write_text(f"{header}\n\n" + "\n".join(sections))
    print(header)


if __name__ == "__main__":
    main()
