"""One trunk or two networks: the multi-task int8 graph against the detection and segmentation int8 graphs.

    python tools/benchmark.py --task deploy --deploy-task multitask
    python tools/benchmark.py --task deploy --deploy-task multitask --deploy-ckpt multitask=<QAT run>/checkpoints/last.ckpt \
        --deploy-ckpt detection=<det run>/checkpoints/last.ckpt --deploy-ckpt segmentation=<seg run>/checkpoints/last.ckpt

The three networks are the embedded task defaults (``task=multitask``, ``task=detection``,
``task=segmentation``: width 0.35, DeepLabV3-lite at output stride 8) at ``--deploy-size`` (160);
each is quantized with the package quantizer (PTQ on embedded training images, or the QAT graph
of a QAT checkpoint) and exported to ONNX, then timed in ONNX Runtime with ``--threads`` intra-op
threads in this one process: the multi-task graph, and the two single-task graphs run one after
the other, in alternating rounds (median of the rounds' medians; p99 over every run).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["run_multitask", "int8_onnx_file"]

# the one-trunk graph and the two single-task graphs it replaces
GRAPHS = ("multitask", "detection", "segmentation")


def int8_onnx_file(task: str, ckpt: str | None, size: int, calib: list[torch.Tensor], out_dir: Path, overrides: list[str]) -> Path:
    from hydra.utils import instantiate

    from ..config import compose_train_config
    from ..models.contract import warm_batchnorm
    from ..quant.deploy import export_deploy
    from ..quant.export import load_for_export
    from ..quant.pt2e import convert
    from ..quant.ptq import ptq_convert

    example = calib[0][:2]
    prepared = None
    if ckpt:
        _, net, prepared, _ = load_for_export(ckpt, lambda: example)
    else:
        net = instantiate(compose_train_config([f"task={task}", "pretrain=none", *overrides]).model.net)  # any input size runs
        warm_batchnorm(net, calib[:4])
    net = net.eval()
    q = convert(prepared) if prepared is not None else ptq_convert(net, example, calib)
    return export_deploy(q, net, example, out_dir / f"{task}.int8.onnx")


def run_multitask(args) -> str:
    """Markdown: latency at each batch size and file size of the three int8 graphs; multi-task vs the pair."""
    from ..quant.export import export_datamodule
    from ..quant.ort_runner import OrtModel
    from ..quant.ptq import calibration_batches
    from .common import cpu_int8_flags, times_ms

    size = args.deploy_size or 160
    overrides = [f"paths.data_dir={args.deploy_data_dir}"] if args.deploy_data_dir else []
    dm = export_datamodule("multitask", [f"data.image_size={size}", *overrides])
    calib = calibration_batches(dm.train_dataloader(), args.deploy_calibration_images)
    ckpts = dict(c.split("=", 1) for c in args.deploy_ckpt)
    out_dir = Path(args.deploy_out or tempfile.mkdtemp(prefix="deploy_multitask_"))
    files = {t: int8_onnx_file(t, ckpts.get(t), size, calib, out_dir, overrides) for t in GRAPHS}
    models = {t: OrtModel(p, args.threads) for t, p in files.items()}
    batches = args.batches or (1, 8)
    rows = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, 3, size, size)).astype(np.float32)
        runs = {
            "multitask": lambda: models["multitask"].session.run(None, {models["multitask"].input_name: x}),
            "detection": lambda: models["detection"].session.run(None, {models["detection"].input_name: x}),
            "segmentation": lambda: models["segmentation"].session.run(None, {models["segmentation"].input_name: x}),
        }
        runs["detection + segmentation"] = lambda: (runs["detection"](), runs["segmentation"]())
        meds: dict[str, list[float]] = {k: [] for k in runs}
        every: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds):  # alternate, so that drift in machine load hits every variant alike
            for name, fn in runs.items():
                t = times_ms(fn, args.warmup, args.repeats)
                meds[name].append(statistics.median(t))
                every[name] += t
        rows[b] = {k: (statistics.median(meds[k]), float(np.percentile(every[k], 99))) for k in runs}
    mb = {t: p.stat().st_size / 2**20 for t, p in files.items()}
    mb["detection + segmentation"] = mb["detection"] + mb["segmentation"]
    lines = [f"int8 ONNX Runtime at {size}x{size}, {args.threads} threads, CPU int8 path: {cpu_int8_flags()}; "
             f"median of {args.rounds} rounds x {args.repeats} runs (p99 over all runs)", "",
             "| graph | " + " | ".join(f"batch {b}: p50 / p99 (ms)" for b in batches) + " | size (MB) |",
             "|---|" + "---:|" * len(batches) + "---:|"]
    for name in rows[batches[0]]:
        cells = " | ".join(f"{rows[b][name][0]:.2f} / {rows[b][name][1]:.2f}" for b in batches)
        lines.append(f"| {name} | {cells} | {mb[name]:.2f} |")
    ratios = ", ".join(f"batch {b}: {rows[b]['multitask'][0] / rows[b]['detection + segmentation'][0]:.2f}x" for b in batches)
    lines += ["", f"multitask / (detection + segmentation), p50: {ratios}; size: {mb['multitask'] / mb['detection + segmentation']:.2f}x"]
    return "\n".join(lines)
