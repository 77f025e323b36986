"""Detection post-processing on decoded boxes and scores: top-k, per-class NMS, score threshold.

Plain functions of a ``PostprocessConfig``, so that the PyTorch detector, its quantized graph and
an exported file run in any runtime (``export_formats``) select detections with the same code.
``select_detections`` is written for ``torch.export`` (the NMS-in-graph ONNX export uses it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torchvision.ops import batched_nms, nms

from .contract import image_hw

__all__ = [
    "PostprocessConfig", "EVAL_POSTPROCESS", "DEPLOY_POSTPROCESS", "select_detections", "topk_candidates", "nms_one_call",
    "split_detections",
    "pad_detections", "config_to_meta", "config_from_meta",
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


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, image_size, cfg: PostprocessConfig) -> tuple[torch.Tensor, ...]:
    """Top-k, per-class NMS and score threshold over a batch of decoded ``boxes`` (N, A, 4) and ``scores`` (N, A, K).

    Returns flat ``boxes (M, 4)``, ``scores (M,)``, ``labels (M,)`` in 1..K, ``batch_index (M,)`` and
    ``rank (M,)`` (position within its image), ordered by image then score. NMS runs per (image, class):
    see ``_nms_per_group``.
    """
    h, w = image_hw(image_size)
    n = scores.shape[0]
    cand, top_scores, labels, batch_index, groups = topk_candidates(boxes, scores, cfg.topk_candidates)
    keep = _nms_per_group(cand, top_scores, groups, max(h, w), cfg.nms_thresh)  # sorted by score, all images
    keep = keep[top_scores[keep] > cfg.score_thresh]
    # candidates are numbered image by image, best first (top-k order): sorting the kept numbers groups them by
    # image in score order, whatever order NMS returned them in (unique keys: a sort that exports to ONNX)
    keep = keep.sort().values
    kb = batch_index[keep]
    onehot = (kb[:, None] == torch.arange(n, device=kb.device)[None, :]).to(torch.int64)  # (M, N)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1
    keep, rank = keep[rank < cfg.detections_per_img], rank[rank < cfg.detections_per_img]
    return cand[keep], top_scores[keep], labels[keep], batch_index[keep], rank


def topk_candidates(boxes: torch.Tensor, scores: torch.Tensor, topk: int) -> tuple[torch.Tensor, ...]:
    """The best ``topk`` (anchor, class) pairs of each image, flat and numbered image by image, best first:
    ``boxes (N*k, 4)``, ``scores``, ``labels`` in 1..K, ``batch_index`` and ``groups`` (one per (image, class))."""
    n, a, k_cls = scores.shape
    k = min(topk, a * k_cls)
    top_scores, idx = scores.reshape(n, a * k_cls).topk(k, dim=1)  # (N, k), sorted
    anchor_idx = idx // k_cls
    labels = idx % k_cls + 1
    batch_index = torch.arange(n, device=boxes.device).unsqueeze(1).expand(n, k)
    # the candidates' boxes by flat index (a Gather, which every runtime's shape inference handles)
    cand = boxes.reshape(-1, 4).index_select(0, (batch_index * a + anchor_idx).reshape(-1))  # (N*k, 4)
    labels, batch_index = labels.reshape(-1), batch_index.reshape(-1)
    return cand, top_scores.reshape(-1), labels, batch_index, batch_index * (k_cls + 1) + labels


def nms_one_call(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, extent: int, thresh: float) -> torch.Tensor:
    """NMS inside each group as one ``nms`` over every box, the groups shifted apart by more than the image
    (``batched_nms``'s trick): no data-dependent loop, so it traces and exports."""
    offsets = groups.to(boxes.dtype) * float(extent + 1)
    return nms(boxes + offsets[:, None], scores, thresh)


def _nms_per_group(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, extent: int, thresh: float) -> torch.Tensor:
    """Indices kept by NMS inside each group, sorted by score.

    Traced or exported: ``nms_one_call``. Eager: ``torchvision.ops.batched_nms``, which loops over the groups
    when there are many boxes. The single call is quadratic in the whole batch's candidates: at evaluation's
    batch of 50 images x 1000 candidates it took 3.2 s on this project's 2-core CPU against 0.11 s per group,
    keeping the same boxes; at batch 1 both take 3 ms (``python -m mnv2_tasks.benchmarks.detection_nms``;
    BENCHMARKS.md, session 8).
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return nms_one_call(boxes, scores, groups, extent, thresh)
    return batched_nms(boxes, scores, groups, thresh)


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
