"""SSD box coder: xyxy boxes <-> ``(dx, dy, dw, dh)`` offsets from anchors, with variance weights.

The encoding is Faster R-CNN's / SSD's: ``dx = wx * (gx - ax) / aw``, ``dw = ww * log(gw / aw)``;
the default weights ``(10, 10, 5, 5)`` are SSD's variances ``(0.1, 0.1, 0.2, 0.2)`` inverted,
as torchvision's ``SSD`` uses them. Works on any leading shape ``(..., 4)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["BoxCoder"]


class BoxCoder:
    """``encode(boxes, anchors) -> deltas`` and ``decode(deltas, anchors) -> boxes``, exact inverses.

    ``bbox_xform_clip`` bounds ``dw, dh`` before ``exp`` in ``decode`` (as torchvision does) so that an
    untrained network cannot produce infinite boxes.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(f"BoxCoder weights must be 4 positive numbers, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    @staticmethod
    def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(..., 4) xyxy ``boxes`` relative to (..., 4) xyxy ``anchors`` -> (..., 4) offsets."""
        wx, wy, ww, wh = self.weights
        gx, gy, gw, gh = self._centre_size(boxes)
        ax, ay, aw, ah = self._centre_size(anchors)
        return torch.stack(
            [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=-1
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(..., 4) offsets applied to (..., 4) xyxy ``anchors`` (broadcast) -> (..., 4) xyxy boxes."""
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = self._centre_size(anchors.to(deltas.dtype))
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.bbox_xform_clip)
        cx, cy = dx * aw + ax, dy * ah + ay
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights})"
