"""Detection NMS: one ``nms`` call over a whole batch against NMS per (image, class), in PyTorch and in ONNX Runtime.

    python -m mnv2_tasks.benchmarks.detection_nms                  # the detection default, batches 1, 16 and 50
    python -m mnv2_tasks.benchmarks.detection_nms --batches 8 --topk 200 --threads 1
    python -m mnv2_tasks.benchmarks.detection_nms --override model.net.num_classes=81 --override data.image_size=320

The candidates are what evaluation feeds NMS: the detection default network (``task=detection``: width 0.35,
192 px, the stride-8 level) on the embedded validation images, decoded, then the best ``--topk`` (anchor, class)
pairs per image (evaluation's batch is ``data.eval_batch_size``, 50). The network is untrained (seeded), so many
boxes overlap and few are suppressed: the work NMS does early in training.

Four ways on the same candidates, in alternating rounds:
- PyTorch, one call: ``torchvision.ops.nms`` over the batch with the groups shifted apart (what every path did
  before session 8);
- PyTorch, per group: ``torchvision.ops.batched_nms`` (eager evaluation now);
- ONNX Runtime, one call: that graph exported (what the exported detectors ran before session 8);
- ONNX Runtime, per group: the graph the detectors export now (``grouped_nms``: one ``NonMaxSuppression`` node
  with image and class dimensions).
The table gives each one's median (p99) in ms, the ratios, and checks that all four keep the same boxes.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms, nms

from ..models.detection_postprocess import EVAL_POSTPROCESS, nms_per_group, topk_candidates
from .common import cpu_int8_flags, times_ms, timing_parser


def _candidates(batch: int, topk: int, seed: int, overrides=()) -> tuple[torch.Tensor, ...]:
    """Default-network candidates as (N, k, 4) boxes, (N, k) scores and (N, k) labels in 1..K, and K."""
    from hydra.utils import instantiate

    from ..config import compose_train_config

    cfg = compose_train_config(["task=detection", "pretrain=none", *overrides])
    torch.manual_seed(seed)
    dm = instantiate(cfg.data, eval_batch_size=batch)
    dm.prepare_data()
    dm.setup("validate")
    images = next(iter(dm.val_dataloader()))["image"]
    net = instantiate(cfg.model.net).eval()
    with torch.no_grad():
        boxes, scores = net.decode(net.head_outputs(net.features(images)), images.shape[-2:])
    k = min(topk, scores.shape[1] * scores.shape[2])
    cand, top_scores, labels, _ = topk_candidates(boxes, scores, k)
    return cand.reshape(batch, k, 4), top_scores.reshape(batch, k), labels.reshape(batch, k), scores.shape[2]


class _OneCall(torch.nn.Module):
    def __init__(self, num_classes: int, thresh: float):
        super().__init__()
        self.num_classes, self.thresh = num_classes, thresh

    def forward(self, boxes, scores, labels):
        n, k = scores.shape
        groups = torch.arange(n, device=boxes.device)[:, None] * (self.num_classes + 1) + labels
        shift = (groups.reshape(-1).to(boxes.dtype) * (boxes.max() + 1))[:, None]  # groups apart
        return nms(boxes.reshape(-1, 4) + shift, scores.reshape(-1), self.thresh)


class _PerGroup(_OneCall):
    def forward(self, boxes, scores, labels):
        n, k = scores.shape
        batch_index = torch.arange(n, device=boxes.device)[:, None].expand(n, k).reshape(-1)
        return nms_per_group(boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), batch_index, k,
                              self.num_classes, self.thresh)


def _onnx(module: torch.nn.Module, inputs, path: Path, threads: int):
    import onnxruntime as ort
    from torch.export import Dim

    from ..quant.onnx_export import TRANSLATIONS

    batch = Dim("batch", min=1, max=1024)
    torch.onnx.export(module, inputs, dynamo=True, opset_version=20, input_names=["boxes", "scores", "labels"],
                      dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), custom_translation_table=TRANSLATIONS,
                      verbose=False).save(str(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(args) -> str:
    torch.set_num_threads(args.threads)
    thresh = EVAL_POSTPROCESS.nms_thresh
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
             f"CPU flags: {cpu_int8_flags()}; median (p99) of {args.repeats} calls x {args.rounds} rounds, ms",
             "", "| batch | candidates | kept | PyTorch one call | PyTorch per group | ratio | "
             "ONNX Runtime one call | ONNX Runtime per group | ratio | same boxes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory(prefix="nms_bench_") as tmp:
        for batch in args.batches or (1, 16, 50):
            lines.append(_row(batch, args, thresh, Path(tmp)))
    return "\n".join(lines)


def _row(batch: int, args, thresh: float, tmp: Path) -> str:
    """One table row: the four ways timed in alternating rounds on one batch's candidates."""
    boxes, scores, labels, num_classes = _candidates(batch, args.topk, args.seed, args.override)
    example = (boxes[:2].repeat(2, 1, 1), scores[:2].repeat(2, 1), labels[:2].repeat(2, 1))  # batch > 1: stays dynamic
    one, per = _OneCall(num_classes, thresh), _PerGroup(num_classes, thresh)
    sessions = {"one": _onnx(one, example, tmp / "one.onnx", args.threads),
                "per": _onnx(per, example, tmp / "per.onnx", args.threads)}
    feed = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()}
    calls = {"pt_one": lambda: one(boxes, scores, labels), "pt_per": lambda: per(boxes, scores, labels),
             "ort_one": lambda: sessions["one"].run(None, feed)[0],
             "ort_per": lambda: sessions["per"].run(None, feed)[0]}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            times[name] += times_ms(fn, args.warmup, args.repeats)
    kept = [sorted(np.asarray(fn()).tolist()) for fn in calls.values()]
    same = all(k == kept[0] for k in kept)
    med = {k: statistics.median(t) for k, t in times.items()}
    p99 = {k: (statistics.quantiles(t, n=100)[98] if len(t) > 1 else t[0]) for k, t in times.items()}
    cell = lambda k: f"{med[k]:.1f} ({p99[k]:.1f})"  # noqa: E731
    return (f"| {batch} | {scores.numel()} | {len(kept[0])} | {cell('pt_one')} | {cell('pt_per')} | "
            f"{med['pt_one'] / med['pt_per']:.1f}x | {cell('ort_one')} | {cell('ort_per')} | "
            f"{med['ort_one'] / med['ort_per']:.1f}x | {'yes' if same else 'NO'} |")


def parser():
    p = timing_parser(__doc__, repeats=5, warmup=1)
    p.add_argument("--topk", type=int, default=EVAL_POSTPROCESS.topk_candidates, help="candidates per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[],
                   help="Hydra override of the network or data, repeatable (e.g. model.net.num_classes=81)")
    return p


def main(argv: list[str] | None = None) -> None:
    print(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
