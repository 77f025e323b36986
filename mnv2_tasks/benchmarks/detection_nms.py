"""Detection NMS: one ``nms`` call over a whole batch (the exported graphs' way) against per-group NMS (eager).

    python -m mnv2_tasks.benchmarks.detection_nms                  # the detection default, batches 16 and 50
    python -m mnv2_tasks.benchmarks.detection_nms --batches 1 8 64 --topk 200 --threads 1

The candidates are what evaluation feeds NMS: the detection default network (``task=detection``: width 0.35,
192 px, the stride-8 level) on the embedded validation images, decoded, then the best ``--topk`` (anchor, class)
pairs per image (evaluation's batch is ``data.eval_batch_size``, 50). The network is untrained (seeded), so many boxes overlap and few are suppressed: the work NMS
does early in training. Both ways are timed on the same candidates in alternating rounds; the table gives
the median, p99 and the ratio, and checks that both keep the same boxes. Prints markdown.
"""

from __future__ import annotations

import platform
import statistics

import torch
from torchvision.ops import batched_nms

from ..models.detection_postprocess import EVAL_POSTPROCESS, nms_one_call, topk_candidates
from .common import cpu_int8_flags, times_ms, timing_parser


def _candidates(batch: int, topk: int, seed: int) -> tuple[tuple[torch.Tensor, ...], int]:
    from hydra.utils import instantiate

    from ..config import compose_train_config

    cfg = compose_train_config(["task=detection", "pretrain=none"])
    torch.manual_seed(seed)
    dm = instantiate(cfg.data, eval_batch_size=batch)
    dm.prepare_data()
    dm.setup("validate")
    images = next(iter(dm.val_dataloader()))["image"]
    net = instantiate(cfg.model.net).eval()
    with torch.no_grad():
        raw = net.head_outputs(net.features(images))
        boxes, scores = net.decode(raw, images.shape[-2:])
    return topk_candidates(boxes, scores, topk), max(images.shape[-2:])


def run(args) -> str:
    torch.set_num_threads(args.threads)
    thresh = EVAL_POSTPROCESS.nms_thresh
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
             f"CPU flags: {cpu_int8_flags()}; median (p99) of {args.repeats} calls x {args.rounds} rounds, ms",
             "", "| batch | candidates | kept | one call | per group | one call / per group | same boxes |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for batch in args.batches or (16, 50):
        (cand, scores, _, _, groups), extent = _candidates(batch, args.topk, args.seed)
        one = lambda: nms_one_call(cand, scores, groups, extent, thresh)  # noqa: E731
        per = lambda: batched_nms(cand, scores, groups, thresh)  # noqa: E731
        t_one, t_per = [], []
        for _ in range(args.rounds):
            t_one += times_ms(one, args.warmup, args.repeats)
            t_per += times_ms(per, args.warmup, args.repeats)
        same = one().sort().values.equal(per().sort().values)
        m_one, m_per = statistics.median(t_one), statistics.median(t_per)
        p99 = lambda t: statistics.quantiles(t, n=100)[98] if len(t) > 1 else t[0]  # noqa: E731
        lines.append(f"| {batch} | {len(cand)} | {len(per())} | {m_one:.1f} ({p99(t_one):.1f}) | "
                     f"{m_per:.1f} ({p99(t_per):.1f}) | {m_one / m_per:.1f}x | {'yes' if same else 'NO'} |")
    return "\n".join(lines)


def parser():
    p = timing_parser(__doc__, repeats=5, warmup=1)
    p.add_argument("--topk", type=int, default=EVAL_POSTPROCESS.topk_candidates, help="candidates per image")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    print(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
