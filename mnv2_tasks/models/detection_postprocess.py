"""Detection post-processing on decoded boxes and scores: top-k, per-class NMS, score threshold.

Plain functions of a ``PostprocessConfig``, so that the PyTorch detector, its quantized graph and
an exported file run in any runtime (``export_formats``) select detections with the same code.
``select_detections`` is written for ``torch.export`` (the NMS-in-graph ONNX export uses it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torchvision.ops import batched_nms

__all__ = [
    "PostprocessConfig", "EVAL_POSTPROCESS", "DEPLOY_POSTPROCESS", "select_detections", "topk_candidates",
    "nms_per_group", "grouped_nms", "split_detections", "pad_detections", "config_to_meta", "config_from_meta",
]


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and NMS settings. ``topk_candidates``: best (anchor, class) pairs per image kept
    before NMS; ``detections_per_img``: kept after NMS."""

    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int


# evaluation: many low-confidence detections, as COCO mAP wants (it reads the best 100 per image)
EVAL_POSTPROCESS = PostprocessConfig(score_thresh=0.001, nms_thresh=0.55, topk_candidates=1000, detections_per_img=100)
# deployment: confident detections only
DEPLOY_POSTPROCESS = PostprocessConfig(score_thresh=0.3, nms_thresh=0.45, topk_candidates=200, detections_per_img=50)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, cfg: PostprocessConfig) -> tuple[torch.Tensor, ...]:
    """Top-k, per-class NMS and score threshold over a batch of decoded ``boxes`` (N, A, 4) and ``scores`` (N, A, K).

    Returns flat ``boxes (M, 4)``, ``scores (M,)``, ``labels (M,)`` in 1..K, ``batch_index (M,)`` and
    ``rank (M,)`` (position within its image), ordered by image then score. NMS runs per (image, class):
    see ``nms_per_group``.
    """
    n, a, k_cls = scores.shape
    k = min(cfg.topk_candidates, a * k_cls)
    cand, top_scores, labels, batch_index = topk_candidates(boxes, scores, k)
    keep = nms_per_group(cand, top_scores, labels, batch_index, k, k_cls, cfg.nms_thresh)
    keep = keep[top_scores[keep] > cfg.score_thresh]
    # candidates are numbered image by image, best first (top-k order): sorting the kept numbers groups them by
    # image in score order, whatever order NMS returned them in (unique keys: a sort that exports to ONNX)
    keep = keep.sort().values
    kb = batch_index[keep]
    onehot = (kb[:, None] == torch.arange(n, device=kb.device)[None, :]).to(torch.int64)  # (M, N)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1
    keep, rank = keep[rank < cfg.detections_per_img], rank[rank < cfg.detections_per_img]
    return cand[keep], top_scores[keep], labels[keep], batch_index[keep], rank


def topk_candidates(boxes: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The best ``k`` (anchor, class) pairs of each image (``k`` at most A * K), flat and numbered image by image,
    best first: ``boxes (N*k, 4)``, ``scores``, ``labels`` in 1..K and ``batch_index``."""
    n, a, k_cls = scores.shape
    top_scores, idx = scores.reshape(n, a * k_cls).topk(k, dim=1)  # (N, k), sorted
    anchor_idx = idx // k_cls
    labels = idx % k_cls + 1
    batch_index = torch.arange(n, device=boxes.device).unsqueeze(1).expand(n, k)
    # the candidates' boxes by flat index (a Gather, which every runtime's shape inference handles)
    cand = boxes.reshape(-1, 4).index_select(0, (batch_index * a + anchor_idx).reshape(-1))  # (N*k, 4)
    return cand, top_scores.reshape(-1), labels.reshape(-1), batch_index.reshape(-1)


@torch.library.custom_op("mnv2_tasks::grouped_nms", mutates_args=())
def grouped_nms(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> torch.Tensor:
    """ONNX ``NonMaxSuppression``: ``boxes (N, B, 4)`` corners, ``scores (N, C, B)``; NMS inside each (image, class)
    over the boxes scoring above ``score_threshold``, at most ``max_per_class`` kept each. Returns the kept
    ``(M, 3)`` rows ``[image, class, box]``. Exported graphs call it, and it exports as that one ONNX node
    (``quant.onnx_export``), which ONNX Runtime, OpenVINO and TensorRT run per (image, class)."""
    c = scores.shape[1]
    bi, ci, ii = (scores > score_threshold).nonzero(as_tuple=True)
    keep = batched_nms(boxes[bi, ii], scores[bi, ci, ii], bi * c + ci, iou_threshold)  # sorted by score
    group = (bi * c + ci)[keep]
    # at most max_per_class per group, the best first (a stable sort keeps the score order inside a group)
    order = group.sort(stable=True).indices
    first = torch.searchsorted(group[order], group[order], right=False)
    keep = keep[order][torch.arange(len(order), device=keep.device) - first < max_per_class]
    return torch.stack([bi[keep], ci[keep], ii[keep]], 1)


@grouped_nms.register_fake
def _grouped_nms_fake(boxes, scores, max_per_class, iou_threshold, score_threshold):
    return scores.new_empty((torch.library.get_ctx().new_dynamic_size(), 3), dtype=torch.int64)


def nms_per_group(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, batch_index: torch.Tensor,
                   k: int, num_classes: int, thresh: float) -> torch.Tensor:
    """Indices of the flat candidates (``k`` per image) kept by NMS inside each (image, class).

    Eager: ``torchvision.ops.batched_nms``, which loops over the groups when there are many boxes. Traced or
    exported: ``grouped_nms`` over the candidates as (N, k) boxes and (N, K, k) scores (-1 where a candidate is
    not of that class), one ONNX ``NonMaxSuppression``. Before, graphs ran one ``nms`` over the whole batch with
    the groups shifted apart, which is quadratic in the batch: at evaluation's batch of 50 images x 1000 candidates
    on this project's 2-core CPU, 2.8 s against 0.09 s per group in PyTorch and 1.06 s against 0.03 s in ONNX
    Runtime, keeping the same boxes (``python -m mnv2_tasks.benchmarks.detection_nms``; BENCHMARKS.md, session 8).
    """
    if not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()):
        return batched_nms(boxes, scores, batch_index * (num_classes + 1) + labels, thresh)
    classes = torch.arange(1, num_classes + 1, device=labels.device).reshape(1, num_classes, 1)
    per_class = torch.where(labels.reshape(-1, 1, k) == classes, scores.reshape(-1, 1, k), -1.0)  # (N, K, k)
    kept = grouped_nms(boxes.reshape(-1, k, 4), per_class, k, thresh, -0.5)
    return kept[:, 0] * k + kept[:, 2]


def split_detections(flat: tuple[torch.Tensor, ...], batch_size: int) -> list[dict]:
    """Flat ``(boxes, scores, labels, batch_index, ...)`` -> one ``{"boxes", "scores", "labels"}`` per image (eager only)."""
    boxes, scores, labels, batch_index = flat[:4]
    counts = torch.bincount(batch_index, minlength=batch_size).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes.split(counts), scores.split(counts), labels.split(counts))
    ]


def pad_detections(flat: tuple[torch.Tensor, ...], batch_size: int, per_image: int) -> tuple[torch.Tensor, ...]:
    """``select_detections`` output -> fixed shapes: ``boxes (N, D, 4)``, ``scores (N, D)``, ``labels (N, D)``
    int64 and ``num_detections (N,)``, D = ``per_image``; rows past ``num_detections`` are zeros."""
    boxes, scores, labels, batch_index, rank = flat
    n, d = batch_size, per_image
    slot = batch_index * d + rank
    out_boxes = boxes.new_zeros((n * d, 4)).index_put((slot,), boxes).reshape(n, d, 4)
    out_scores = scores.new_zeros((n * d,)).index_put((slot,), scores).reshape(n, d)
    out_labels = labels.new_zeros((n * d,)).index_put((slot,), labels).reshape(n, d)
    num = torch.zeros(n, dtype=torch.int64, device=boxes.device).index_add(0, batch_index, torch.ones_like(batch_index))
    return out_boxes, out_scores, out_labels, num


def config_to_meta(cfg: PostprocessConfig) -> dict[str, str]:
    """The settings as file metadata (``postprocess_<field>``)."""
    return {f"postprocess_{k}": str(v) for k, v in asdict(cfg).items()}


def config_from_meta(meta: dict[str, str]) -> PostprocessConfig:
    """The settings recorded by ``config_to_meta``; a missing one is an error naming the key."""
    values = {}
    for f in fields(PostprocessConfig):
        key = f"postprocess_{f.name}"
        if key not in meta:
            raise ValueError(f"the model file's metadata lacks {key!r}; re-export it with tools/export.py")
        values[f.name] = (float if f.type in ("float", float) else int)(float(meta[key]))
    return PostprocessConfig(**values)
