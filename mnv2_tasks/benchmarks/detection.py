"""Detection benchmark: our SSDLite-MobileNetV2 against torchvision's ssdlite320_mobilenet_v3_large.

    python -m mnv2_tasks.benchmarks.detection                       # params, MAdds, CPU latency at 320 (batch 1 and 8)
    python -m mnv2_tasks.benchmarks.detection --train               # + both trained on the embedded data, same pipeline
    python tools/benchmark.py --task detection [--train]  # the same, through the generic entry point

Size and speed use the COCO configuration (81 classes, 320x320, width 1.0, no pretrained weights),
postprocessing included (each model's evaluation defaults). ``--train`` runs ``train(cfg)`` with
``task=detection`` once per variant (``VARIANTS``): same data, augmentation, epochs, optimizer and
schedule; extra Hydra overrides apply to all (``--override key=value``); ``--variants`` picks a subset.
The controlled comparison of issue 15 (which part explains torchvision's lead from scratch)::

    python tools/benchmark.py --task detection --train --override trainer.max_epochs=60 --override data.image_size=160 \
        --variants ours_scratch_paper torchvision_mnv2_scratch torchvision ours_scratch_paper_scaled

From scratch on this small data a single run is noisy (about +-0.05 mAP between seeds), so compare means:
``--seeds 42 7 1`` trains every variant at each seed and reports the mean and every seed's mAP.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .common import count_madds, count_params, median_latency_ms, timing_parser


def _models(num_classes: int = 81, size: int = 320):
    from ..models import build_ssdlite, build_torchvision_ssdlite

    torch.manual_seed(0)
    return {
        "ours: SSDLite-MobileNetV2 1.0": build_ssdlite(num_classes, 1.0, size).eval(),
        "torchvision ssdlite320_mobilenet_v3_large": build_torchvision_ssdlite(num_classes, size).eval(),
    }


def size_and_speed(args) -> str:
    models = _models()
    x1 = torch.randn(1, 3, 320, 320)
    lines = ["| model (81 classes, 320x320) | params | MAdds |", "|---|---:|---:|"]
    for name, m in models.items():
        lines.append(f"| {name} | {count_params(m):,} | {count_madds(m, x1) / 1e9:.3f}B |")
    lines += ["", "| batch | " + " | ".join(f"{n} (ms)" for n in models) + " | ratio ours/torchvision |",
              "|---:|" + "---:|" * (len(models) + 1)]
    with torch.inference_mode():
        for batch in args.batches or (1, 8):
            # random images give many low-score boxes: postprocessing is exercised at its evaluation defaults
            x = torch.randn(batch, 3, 320, 320)
            times = {n: [] for n in models}
            for _ in range(args.rounds):  # interleaved, so that drift in machine load hits both alike
                for n, m in models.items():
                    times[n].append(median_latency_ms(lambda: m(x), args.warmup, args.repeats))
            med = [sorted(t)[len(t) // 2] for t in times.values()]
            lines.append(f"| {batch} | " + " | ".join(f"{t:.1f}" for t in med) + f" | {med[0] / med[1]:.3f} |")
    return "\n".join(lines)


def _compose(overrides: list[str], out_dir: Path):
    from omegaconf import open_dict

    from ..config import compose_train_config

    cfg = compose_train_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.trainer.enable_progress_bar = False
    return cfg


# the paper's six levels, its extra layers (not scaled with the width) and torchvision's anchor range,
# instead of the default's stride-8 level and width-scaled extra layers
_PAPER_LEVELS = ["model.net.stride8_level=false", "model.net.min_ratio=0.2", "model.net.max_ratio=0.95",
                 "model.net.scale_extras=false"]
# the loss before session 6: anchors in crowd regions ignored, 3 hard negatives in an image without objects
# (the default now does as torchvision's SSD: crowd regions are negatives, empty images give none)
_IGNORE_CROWD_LOSS = ["model.net.ignore_crowd=true", "model.net.empty_image_negatives=null"]
_NCHW = "model.channels_last=false"
# tag -> (row name, overrides after task=detection)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ours": ("ours: SSDLite-MobileNetV2 (embedded pretrained backbone, the default)", []),
    "ours_scratch": ("ours: SSDLite-MobileNetV2 from scratch (pretrain=none)", ["pretrain=none"]),
    "ours_scratch_ignore_crowd": ("ours from scratch, the loss before session 6 (crowd regions ignored, negatives in "
                                  "images without objects)", ["pretrain=none", *_IGNORE_CROWD_LOSS]),
    "ours_paper": ("ours, the paper's 6 levels, embedded pretrained backbone", _PAPER_LEVELS),
    "ours_scratch_paper": ("ours, the paper's 6 levels, from scratch, the loss before session 6 (session 2's detector)",
                           ["pretrain=none", *_PAPER_LEVELS, *_IGNORE_CROWD_LOSS]),
    "ours_scratch_paper_scaled": ("ours, the paper's 6 levels, extra layers scaled with the width, from scratch, "
                                  "the loss before session 6",
                                  ["pretrain=none", *_PAPER_LEVELS, "model.net.scale_extras=true", *_IGNORE_CROWD_LOSS]),
    "ours_scratch_paper_scaled_tvloss": ("the same with the default loss: torchvision's recipe on our backbone, in our code",
                                         ["pretrain=none", *_PAPER_LEVELS, "model.net.scale_extras=true"]),
    "torchvision": ("torchvision ssdlite320_mobilenet_v3_large from scratch", ["model=ssdlite_tv_mnv3"]),
    "torchvision_mnv2_scratch": ("torchvision's SSDLite on our MobileNetV2 backbone, from scratch",
                                 ["model=ssdlite_tv_mnv2", "pretrain=none"]),
    "torchvision_mnv2": ("torchvision's SSDLite on our MobileNetV2 backbone, embedded pretrained backbone",
                         ["model=ssdlite_tv_mnv2"]),
    # the same from scratch in NCHW: the task trains every detector channels-last; session 2 handed torchvision's
    # model NCHW batches, and one format against the other is a different trajectory per seed (BENCHMARKS.md)
    "ours_scratch_nchw": ("ours from scratch, NCHW", ["pretrain=none", _NCHW]),
    "torchvision_nchw": ("torchvision ssdlite320_mobilenet_v3_large from scratch, NCHW", ["model=ssdlite_tv_mnv3", _NCHW]),
    "torchvision_mnv2_scratch_nchw": ("torchvision's SSDLite on our MobileNetV2 backbone, from scratch, NCHW",
                                      ["model=ssdlite_tv_mnv2", "pretrain=none", _NCHW]),
}


_METRICS = ("mAP", "mAP50", "mAP75", "mAP_small", "AR100")


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def side_by_side_table(rows: list[dict]) -> str:
    """Markdown of ``train_side_by_side``'s runs (one dict per run: ``tag``, ``model``, ``width``, ``input``,
    ``epochs``, ``seed``, ``wall_s`` and the metrics): one row per variant, each metric averaged over its
    seeds, with every seed's mAP listed where there are several."""
    by_tag: dict[str, list[dict]] = {}
    for r in rows:
        by_tag.setdefault(r["tag"], []).append(r)
    several = any(len(runs) > 1 for runs in by_tag.values())
    head = "| model (embedded shapes val) | width | input | epochs | mAP | " + ("mAP per seed | " if several else "")
    head += "mAP50 | mAP75 | mAP_small | AR100 | train+eval wall |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for runs in by_tag.values():
        r0, m = runs[0], {k: _mean([r.get(k) for r in runs]) for k in (*_METRICS, "wall_s")}
        per_seed = " / ".join(f"{r['mAP']:.3f} ({r['seed']})" for r in runs) + " | " if several else ""
        lines.append(f"| {r0['model']} | {r0['width']} | {r0['input']} | {r0['epochs']} | {m['mAP']:.3f} | {per_seed}"
                     f"{m['mAP50']:.3f} | {m['mAP75']:.3f} | {m['mAP_small']:.3f} | {m['AR100']:.3f} | {m['wall_s'] / 60:.1f} min |")
    if several:
        lines += ["", "mAP50 to wall: means over the seeds; mAP per seed: value (seed)."]
    return "\n".join(lines)


def train_side_by_side(args) -> str:
    """Train every variant once per seed, interleaved (all variants at one seed, then the next seed), so
    that a change of machine load hits them alike; ``side_by_side.json`` keeps every run."""
    from ..train import train

    out_root = Path(args.out_dir)
    rows = []
    seeds = args.seeds or [None]
    for seed in seeds:
        for tag in args.variants:
            name, model_override = VARIANTS[tag]
            run_dir = out_root / (tag if seed is None else f"{tag}_s{seed}")
            seed_override = [] if seed is None else [f"seed={seed}"]
            cfg = _compose(["task=detection", *model_override, *args.override, *seed_override], run_dir)
            t0 = time.time()
            metrics = train(cfg)
            rows.append({"tag": tag, "model": name, "width": cfg.model.net.get("width_mult", "-"), "input": cfg.data.image_size,
                         "epochs": cfg.trainer.max_epochs, "seed": cfg.get("seed"), "run_dir": str(run_dir),
                         "wall_s": time.time() - t0, **{k: metrics.get(k) for k in _METRICS}})
            (out_root / "side_by_side.json").write_text(json.dumps(rows, indent=2))  # after every run: nothing lost
    return side_by_side_table(rows) + "\n\nrun dirs: " + ", ".join(r["run_dir"] for r in rows)


def add_options(p: argparse.ArgumentParser) -> None:
    """The detection benchmark's own options (``--task detection``)."""
    g = p.add_argument_group("detection (--task detection)")
    g.add_argument("--train", action="store_true", help="also train the models on the embedded data and compare mAP")
    g.add_argument("--override", action="append", default=[], help="Hydra override for every training run (repeatable)")
    g.add_argument("--out-dir", default="outputs/bench_detection", help="where --train's runs go")
    g.add_argument("--variants", nargs="+", default=["ours", "ours_scratch", "torchvision"],
                   choices=list(VARIANTS), help="which models --train trains, in this order")
    g.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="train every variant once per seed (interleaved) and report the means; default: the config's seed")


def run(args) -> str:
    """Markdown: size and speed, and (``--train``) the side-by-side training."""
    parts = [size_and_speed(args)]
    if args.train:
        parts.append(train_side_by_side(args))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = timing_parser(__doc__, repeats=10, warmup=2)
    add_options(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} runs x {args.rounds} rounds\n")
    print(run(args))


if __name__ == "__main__":
    main()
