"""Segmentation: our DeepLabV3 on MobileNetV2 (lite head and ASPP) against torchvision's MobileNetV3 models.

    python -m mnv2_tasks.benchmarks.segmentation --threads 2 --repeats 10 --rounds 3
    python tools/benchmark.py --task segmentation        # the same, through the shared entry point

21 classes, 512x512 input, batch 1, CPU. Parameters, MAdds (convolutions and matmuls, as papers
count them), and median latency; the four models are measured in turns in one process, so
machine load hits them alike. torchvision's models are built with ``weights=None,
weights_backbone=None`` (nothing is downloaded) and return ``["out"]`` of their dict.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn

from .common import count_madds, count_params, median_latency_ms, timing_parser

NUM_CLASSES = 21
SIZE = 512


class _OutOnly(nn.Module):
    """torchvision segmentation models return ``{"out": ...}``; keep the tensor, as ours returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def models() -> dict[str, nn.Module]:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large

    from ..models.deeplabv3 import build_deeplabv3

    return {
        "ours DeepLabV3-lite MobileNetV2 (OS16, no ASPP)": build_deeplabv3(NUM_CLASSES, 1.0, 16, aspp=False),
        "ours DeepLabV3 MobileNetV2 (OS16, ASPP 6/12/18)": build_deeplabv3(NUM_CLASSES, 1.0, 16, aspp=True),
        "torchvision lraspp_mobilenet_v3_large": _OutOnly(
            lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)),
        "torchvision deeplabv3_mobilenet_v3_large": _OutOnly(
            deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)),
    }


def run(args) -> str:
    """Markdown table: params, MAdds at 512 (and 513, TF DeepLab's crop), CPU latency at 512, batch 1."""
    nets = {name: m.eval() for name, m in models().items()}
    x = torch.randn(1, 3, SIZE, SIZE)
    x513 = torch.randn(1, 3, SIZE + 1, SIZE + 1)
    sizes = {name: (count_params(m), count_madds(m, x), count_madds(m, x513)) for name, m in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for name, m in nets.items():
            assert m(x).shape == (1, NUM_CLASSES, SIZE, SIZE), name
        for _ in range(args.rounds):  # interleaved rounds, median of the medians
            for name, m in nets.items():
                times[name].append(median_latency_ms(lambda: m(x), args.warmup, args.repeats))
    lat = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    ref = lat["torchvision lraspp_mobilenet_v3_large"]
    lines = [
        f"{NUM_CLASSES} classes, {SIZE}x{SIZE}, batch 1, {torch.get_num_threads()} threads; "
        f"latency: median of {args.repeats} runs, median of {args.rounds} interleaved rounds",
        "",
        f"| model | params | MAdds @{SIZE} | MAdds @{SIZE + 1} | CPU latency @{SIZE} (ms) | vs LR-ASPP |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in nets:
        p, m512, m513 = sizes[name]
        lines.append(f"| {name} | {p / 1e6:.2f}M ({p:,}) | {m512 / 1e9:.2f}B | {m513 / 1e9:.2f}B | {lat[name]:.1f} | "
                     f"{lat[name] / ref:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = timing_parser(__doc__, repeats=10, warmup=2).parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    print(run(args))


if __name__ == "__main__":
    main()
