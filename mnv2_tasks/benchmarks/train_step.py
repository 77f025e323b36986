"""Training-step time in the default (NCHW) and channels-last (NHWC) memory formats, per task.

    python -m mnv2_tasks.benchmarks.train_step                 # the three embedded task defaults, 2 threads
    python -m mnv2_tasks.benchmarks.train_step --threads 1 --repeats 20

One optimizer step (forward, loss, backward, AdamW) on random inputs at the embedded defaults'
shapes: SSDLite width 0.35 at 160 px, batch 16 (its loss on two boxes per image); DeepLabV3-lite
width 0.35, output stride 8, 96-px crops, batch 8; MobileNetV2 width 0.35 at 64 px, batch 64.
Median of ``--repeats`` steps after ``--warmup``, both formats alternating over ``--rounds``.
This is what ``model.channels_last`` changes; it backs the figures in BENCHMARKS.md.

``--grad-precision`` reports instead how far each format's fp32 gradients lie from float64 (NCHW) ones
at the same weights and inputs: over all parameters, and for the worst weight tensor.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import median_latency_ms, timing_parser


def _cases():
    from ..models import MobileNetV2
    from ..models.deeplabv3 import build_deeplabv3
    from ..models.ssdlite import build_ssdlite

    det_targets = [{"boxes": torch.tensor([[10.0, 10, 60, 60], [80, 80, 140, 150]]), "labels": torch.tensor([1, 2])}] * 16
    yield ("detection: SSDLite 0.35, 16 x 160 px", build_ssdlite(5, 0.35, 160, reduce_lowest_level=False),
           torch.randn(16, 3, 160, 160), lambda net, x: sum(net(x, det_targets).values()))
    seg_y = torch.randint(0, 5, (8, 96, 96))
    yield ("segmentation: DeepLabV3-lite 0.35 OS8, 8 x 96 px", build_deeplabv3(5, 0.35, output_stride=8, head_chs=128),
           torch.randn(8, 3, 96, 96), lambda net, x: F.cross_entropy(net(x), seg_y))
    cls_y = torch.randint(0, 4, (64,))
    yield ("classification: MobileNetV2 0.35, 64 x 64 px", MobileNetV2(num_classes=4, width_mult=0.35),
           torch.randn(64, 3, 64, 64), lambda net, x: F.cross_entropy(net(x), cls_y))


def run(args) -> str:
    torch.manual_seed(0)
    lines = ["| model, batch | NCHW (ms) | channels-last (ms) | speed-up |", "|---|---:|---:|---:|"]
    for name, net, x, loss_fn in _cases():
        net.train()
        opt = torch.optim.AdamW(net.parameters(), 1e-4)
        xs = {"nchw": x, "nhwc": x.contiguous(memory_format=torch.channels_last)}

        def step(fmt: str) -> None:
            net.to(memory_format=torch.channels_last if fmt == "nhwc" else torch.contiguous_format)
            opt.zero_grad(set_to_none=True)
            loss_fn(net, xs[fmt]).backward()
            opt.step()

        times = {fmt: [] for fmt in xs}
        for _ in range(args.rounds):  # interleaved, so that drift in machine load hits both alike
            for fmt in xs:
                step(fmt)  # converts the weights outside the timed steps
                times[fmt].append(median_latency_ms(lambda: step(fmt), args.warmup, args.repeats))
        a, b = statistics.median(times["nchw"]), statistics.median(times["nhwc"])
        lines.append(f"| {name} | {a:.0f} | {b:.0f} | {a / b:.2f}x |")
    return "\n".join(lines)


def _grads(net, x, loss_fn, dtype: torch.dtype, channels_last: bool) -> dict[str, torch.Tensor]:
    """Every parameter's gradient (float64) of one loss evaluation in ``dtype`` and the given memory format."""
    m = copy.deepcopy(net).to(dtype).train()
    x = x.to(dtype)
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    # the loss functions build fp32 targets: run them at the network's precision under a matching default dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        loss_fn(m, x).backward()
    finally:
        torch.set_default_dtype(previous)
    return {n: p.grad.double() for n, p in m.named_parameters() if p.grad is not None}


def grad_precision() -> str:
    """Markdown: relative error of fp32 gradients in each memory format against float64 NCHW gradients."""
    torch.manual_seed(0)
    lines = ["| model, batch | fp32 NCHW: all parameters | fp32 channels-last: all parameters "
             "| worst weight, channels-last (NCHW) |", "|---|---:|---:|---|"]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()

    for name, net, x, loss_fn in _cases():
        ref = _grads(net, x, loss_fn, torch.float64, False)
        got = {fmt: _grads(net, x, loss_fn, torch.float32, fmt == "nhwc") for fmt in ("nchw", "nhwc")}
        flat = {k: torch.cat([g[n].flatten() for n in ref]) for k, g in (("ref", ref), *got.items())}
        weights = [n for n in ref if ref[n].ndim > 1]
        worst = max(weights, key=lambda n: rel(got["nhwc"][n], ref[n]))
        lines.append(f"| {name} | {rel(flat['nchw'], flat['ref']):.1e} | {rel(flat['nhwc'], flat['ref']):.1e} "
                     f"| `{worst}` {rel(got['nhwc'][worst], ref[worst]):.1e} ({rel(got['nchw'][worst], ref[worst]):.1e}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = timing_parser(__doc__, repeats=10, warmup=2)
    p.add_argument("--grad-precision", action="store_true", help="fp32 gradient error per memory format, not time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.grad_precision:
        print(f"torch {torch.__version__}: fp32 gradients against float64 NCHW, same weights and inputs\n")
        print(grad_precision())
        return
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} steps x {args.rounds} rounds\n")
    print(run(args))


if __name__ == "__main__":
    main()
