"""Classification: our MobileNetV2 against torchvision's ``mobilenet_v2`` (width 1.0, 224x224): params, MAdds, latency."""

from __future__ import annotations

import torch

from .common import count_madds, count_params, median_latency_ms


def run(args) -> str:
    import torchvision

    from ..models import MobileNetV2

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
