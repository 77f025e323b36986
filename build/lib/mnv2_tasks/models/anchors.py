"""SSD default boxes (anchors): per-level scales and aspect ratios, and how well they cover a data set.

Anchors are laid out as torchvision's ``DefaultBoxGenerator`` lays them out (SSD paper, sec. 2.2):
at level ``k`` of ``L``, scale ``s_k`` runs linearly from ``min_ratio`` to ``max_ratio`` (fractions of
the image side), each location gets a box of scale ``s_k``, one of ``sqrt(s_k * s_{k+1})``, and a
pair ``(s_k*sqrt(a), s_k/sqrt(a))`` / its transpose for every aspect ratio ``a``. The order is
(level, y, x, anchor), the order in which ``SSDLiteHead`` flattens its outputs.

``python -m mnv2_tasks.models.anchors ANN_FILE --size 320`` prints how well the default anchors
cover the boxes of a COCO annotation file.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import box_iou

__all__ = ["AnchorGenerator", "anchor_coverage", "format_coverage"]


class AnchorGenerator(nn.Module):
    """Default boxes for a list of feature-map sizes, as ``(A, 4)`` xyxy in input pixels.

    Args:
        aspect_ratios: per level, the ratios ``a > 1`` added as ``a`` and ``1/a`` (a single list
            is used for every level). ``num_levels`` must then be given.
        min_ratio, max_ratio: the smallest and largest scale, as fractions of the image side.
        scales: explicit scales, ``num_levels + 1`` values (the last one only shapes the
            ``sqrt(s_k * s_{k+1})`` box of the last level); overrides ``min_ratio``/``max_ratio``.
        num_levels: number of feature maps (needed when ``aspect_ratios`` is one shared list).
        clip: clip the anchors' width and height to the image (torchvision's ``clip``).
        reduce_lowest_level: TF Object Detection's ``reduce_boxes_in_lowest_layer`` (the paper's
            SSDLite): the first level gets only 3 boxes, ``lowest_scale`` square and a
            ``scales[0]`` pair at the first aspect ratio and its inverse.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (2.0, 3.0),
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        scales: Sequence[float] | None = None,
        num_levels: int | None = None,
        clip: bool = True,
        reduce_lowest_level: bool = False,
        lowest_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if aspect_ratios and not isinstance(aspect_ratios[0], (list, tuple)) and not hasattr(aspect_ratios[0], "__len__"):
            if num_levels is None:
                num_levels = len(scales) - 1 if scales is not None else None
            if num_levels is None:
                raise ValueError("AnchorGenerator: give num_levels (or per-level aspect_ratios) to share one aspect-ratio list")
            aspect_ratios = [list(aspect_ratios)] * num_levels
        self.aspect_ratios = [[float(a) for a in level] for level in aspect_ratios]
        n = len(self.aspect_ratios)
        if num_levels is not None and num_levels != n:
            raise ValueError(f"AnchorGenerator: {n} aspect-ratio lists for {num_levels} levels")
        if any(a <= 0 for level in self.aspect_ratios for a in level):
            raise ValueError(f"AnchorGenerator: aspect ratios must be positive, got {self.aspect_ratios}")
        if scales is None:
            if not 0 < min_ratio <= max_ratio:
                raise ValueError(f"AnchorGenerator: need 0 < min_ratio <= max_ratio, got {min_ratio}, {max_ratio}")
            scales = [min_ratio + (max_ratio - min_ratio) * k / max(1, n - 1) for k in range(n)] + [1.0]
        scales = [float(s) for s in scales]
        if len(scales) != n + 1:
            raise ValueError(f"AnchorGenerator: scales needs {n + 1} values for {n} levels (the last one shapes s'_k), got {len(scales)}")
        self.scales = scales
        self.clip = clip
        self.reduce_lowest_level, self.lowest_scale = reduce_lowest_level, lowest_scale
        # (w, h) pairs per level, fractions of the image side
        self.wh_pairs: list[list[tuple[float, float]]] = []
        for k in range(n):
            s, s_next = scales[k], math.sqrt(scales[k] * scales[k + 1])
            pairs = [(s, s), (s_next, s_next)]
            ratios = self.aspect_ratios[k]
            if k == 0 and reduce_lowest_level:
                pairs, ratios = [(lowest_scale, lowest_scale)], ratios[:1]
            for a in ratios:
                r = math.sqrt(a)
                pairs += [(s * r, s / r), (s / r, s * r)]
            if clip:
                pairs = [(min(w, 1.0), min(h, 1.0)) for w, h in pairs]
            self.wh_pairs.append(pairs)
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def num_levels(self) -> int:
        return len(self.aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        return [len(p) for p in self.wh_pairs]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> torch.Tensor:
        """(sum_k H_k * W_k * A_k, 4) xyxy anchors in pixels of an ``image_size = (H, W)`` input (cached, float32, CPU)."""
        key = (tuple(tuple(int(v) for v in g) for g in grid_sizes), (int(image_size[0]), int(image_size[1])))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(grid_sizes) != self.num_levels:
            raise ValueError(f"AnchorGenerator has {self.num_levels} levels but got {len(grid_sizes)} feature maps")
        img_h, img_w = key[1]
        out = []
        for (fh, fw), pairs in zip(key[0], self.wh_pairs):
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], -1)  # (HW, 2)
            wh = torch.tensor(pairs, dtype=torch.float64)  # (A, 2)
            c = centres[:, None, :].expand(-1, len(pairs), 2)
            wh = wh[None].expand(len(centres), -1, 2)
            boxes = torch.cat([c - wh / 2, c + wh / 2], -1).reshape(-1, 4)  # (HW*A, 4) normalized
            out.append(boxes * torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float64))
        anchors = torch.cat(out).float()
        self._cache[key] = anchors
        return anchors

    def forward(self, image_size: tuple[int, int], feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Anchors for ``feature_maps`` (only their shapes are read) on the device and dtype of the first one."""
        anchors = self.grid_anchors([tuple(f.shape[-2:]) for f in feature_maps], image_size)
        return anchors.to(device=feature_maps[0].device)

    def extra_repr(self) -> str:
        return (f"scales={[round(s, 3) for s in self.scales]}, aspect_ratios={self.aspect_ratios}, clip={self.clip}, "
                f"reduce_lowest_level={self.reduce_lowest_level}, anchors_per_location={self.num_anchors_per_location()}")


@torch.no_grad()
def anchor_coverage(anchors: torch.Tensor, boxes: torch.Tensor, iou_threshold: float = 0.5, chunk: int = 4096) -> dict:
    """How well ``anchors`` (A, 4) cover ground-truth ``boxes`` (M, 4), both xyxy in the same pixels.

    Returns the fraction of boxes whose best anchor reaches ``iou_threshold`` (the others are
    matched only through the forced best-anchor rule), the mean best IoU, and both per size
    bucket (COCO's small < 32^2 <= medium < 96^2 <= large, measured in the given pixels).
    """
    boxes = boxes.reshape(-1, 4).float()
    if boxes.numel() == 0:
        return {"num_boxes": 0, "covered": float("nan"), "mean_best_iou": float("nan"), "by_size": {}}
    best = torch.cat([box_iou(b, anchors).max(1).values for b in boxes.split(chunk)])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    buckets = {"small": area < 32**2, "medium": (area >= 32**2) & (area < 96**2), "large": area >= 96**2}
    by_size = {
        name: {"num_boxes": int(m.sum()), "covered": float((best[m] >= iou_threshold).float().mean()), "mean_best_iou": float(best[m].mean())}
        for name, m in buckets.items() if m.any()
    }
    return {
        "num_boxes": int(len(boxes)),
        "iou_threshold": iou_threshold,
        "covered": float((best >= iou_threshold).float().mean()),
        "mean_best_iou": float(best.mean()),
        "by_size": by_size,
    }


def format_coverage(report: dict) -> str:
    """One line per size bucket: what ``anchor_coverage`` found."""
    if not report["num_boxes"]:
        return "anchor coverage: no boxes"
    thr = report["iou_threshold"]
    lines = [f"anchor coverage: {report['covered']:.1%} of {report['num_boxes']} boxes have an anchor with IoU >= {thr} "
             f"(mean best IoU {report['mean_best_iou']:.3f})"]
    for name, r in report["by_size"].items():
        lines.append(f"  {name:>6}: {r['covered']:.1%} of {r['num_boxes']} (mean best IoU {r['mean_best_iou']:.3f})")
    return "\n".join(lines)


def _main() -> None:  # pragma: no cover - command line
    import argparse
    import json

    p = argparse.ArgumentParser(description="How well SSDLite's default anchors cover the boxes of a COCO annotation file.")
    p.add_argument("ann_file")
    p.add_argument("--size", type=int, default=320, help="model input size (images are resized to size x size)")
    p.add_argument("--min-ratio", type=float, default=0.2)
    p.add_argument("--max-ratio", type=float, default=0.95)
    p.add_argument("--aspect-ratios", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--reduce-lowest-level", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--strides", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    a = p.parse_args()
    data = json.loads(open(a.ann_file).read())
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    boxes = []
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        h, w = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        sx, sy = a.size / w, a.size / h
        boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
    gen = AnchorGenerator(a.aspect_ratios, a.min_ratio, a.max_ratio, num_levels=len(a.strides), reduce_lowest_level=a.reduce_lowest_level)
    grids = [(math.ceil(a.size / s), math.ceil(a.size / s)) for s in a.strides]
    print(format_coverage(anchor_coverage(gen.grid_anchors(grids, (a.size, a.size)), torch.tensor(boxes))))


if __name__ == "__main__":
    _main()
