"""Predictions drawn on images, for a person to look at: class labels, boxes, mask overlays."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.shapes import VOC_PALETTE

_BOX_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def _name(names: list[str] | None, idx: int) -> str:
    return names[idx] if names and 0 <= idx < len(names) else str(idx)


def draw_classification(image: np.ndarray, probs: np.ndarray, names: list[str] | None = None, k: int = 3) -> Image.Image:
    """Top-``k`` classes with probabilities written on the image."""
    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    top = np.argsort(-probs)[:k]
    for row, idx in enumerate(top):
        text = f"{_name(names, int(idx))} {probs[idx]:.2f}"
        draw.rectangle([2, 2 + 12 * row, 8 + 6 * len(text), 13 + 12 * row], fill=(0, 0, 0))
        draw.text((4, 2 + 12 * row), text, fill=(255, 255, 255))
    return im


def _pen(im: Image.Image) -> tuple[int, ImageFont.ImageFont]:
    """Line width and font for a frame: the small bitmap font and 2 px up to 480 px, then growing with the frame, so a
    4000x3000 picture fitted to a screen still shows its boxes and labels."""
    side = min(im.size)
    if side < 480:
        return 2, ImageFont.load_default()
    return max(2, round(side / 320)), ImageFont.load_default(size=max(11, round(side / 45)))


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None, labels: np.ndarray,
                    names: list[str] | None = None, score_threshold: float = 0.3, track_ids=None) -> Image.Image:
    """Boxes (xyxy, image pixels) with ``label score`` captions (``scores=None``: ground truth, names only); labels
    index ``names`` (0 = background). With ``track_ids`` each box is captioned ``#id`` and coloured by its id."""
    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    width, font = _pen(im)
    ids = track_ids if track_ids is not None else [None] * len(boxes)
    for box, score, label, tid in zip(boxes, scores if scores is not None else [None] * len(boxes), labels, ids):
        if score is not None and score < score_threshold:
            continue
        colour = _BOX_COLOURS[int(tid if tid is not None else label) % len(_BOX_COLOURS)]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = (f"#{int(tid)} " if tid is not None else "") + _name(names, int(label)) + (f" {score:.2f}" if score is not None else "")
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        h = b - t + 3
        draw.rectangle([x0, max(0, y0 - h), x0 + (r - l) + 4, max(h, y0)], fill=colour)
        draw.text((x0 + 2, max(0, y0 - h) - t + 1), text, fill=(0, 0, 0), font=font)
    return im


def draw_segmentation(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The class mask (H, W) in VOC colours blended over the image; background (0) left uncoloured."""
    pal = np.asarray(VOC_PALETTE, dtype=np.uint8).reshape(-1, 3)
    colour = pal[mask.astype(np.int64) % 256]
    out = image.astype(np.float32)
    fg = (mask > 0)[..., None]
    out = np.where(fg, (1 - alpha) * out + alpha * colour, out)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def draw_prediction(frame: np.ndarray, pred: dict, score_threshold: float = 0.3) -> Image.Image:
    """A ``Predictor`` output drawn on its frame: the mask blended, boxes with ``name score``, top classes written."""
    image = frame
    if "mask" in pred:
        image = np.asarray(draw_segmentation(image, pred["mask"]))
    if "boxes" in pred:
        by_label = {int(lab): str(n) for lab, n in zip(pred["labels"], pred["names"])}
        names = [by_label.get(i, str(i)) for i in range(max(by_label, default=0) + 1)]
        if pred.get("truth"):  # ground truth (TaskDataModule.truth_of): names, no scores
            im = draw_detections(image, pred["boxes"], None, pred["labels"], names)
            return im if len(pred["boxes"]) else caption(im, "no object (a negative)", where="bottom")
        im = draw_detections(image, pred["boxes"], pred["scores"], pred["labels"], names, score_threshold, pred.get("track_ids"))
        if not (np.asarray(pred["scores"]) >= score_threshold).any():  # say it, rather than show a bare picture
            im = caption(im, f"no box >= {score_threshold:.2f}" + (f" (best {max(pred['scores']):.2f})" if len(pred["scores"]) else ""),
                         where="bottom")
        return im
    if "topk" in pred:
        probs = np.zeros(max(i for i, _, _ in pred["topk"]) + 1)
        names = [""] * len(probs)
        for i, name, p in pred["topk"]:
            probs[i], names[i] = p, name
        return draw_classification(image, probs, names)
    return Image.fromarray(image)


def caption(im: Image.Image, text: str, where: str = "top") -> Image.Image:
    """``im`` with a strip of ``text`` added above (or below) it."""
    h = 12
    out = Image.new("RGB", (im.width, im.height + h), (0, 0, 0))
    out.paste(im, (0, h if where == "top" else 0))
    ImageDraw.Draw(out).text((2, 0 if where == "top" else im.height), text, fill=(255, 255, 255))
    return out


def grid(tiles: list[Image.Image], cols: int | None = None) -> Image.Image:
    """Tiles in rows of ``cols`` (default: about square), each cell the largest tile's size, white between."""
    import math

    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    w, h = max(t.width for t in tiles) + 2, max(t.height for t in tiles) + 2
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for k, tile in enumerate(tiles):
        out.paste(tile, ((k % cols) * w, (k // cols) * h))
    return out


def truth_and_prediction(frame: np.ndarray, truth: dict, pred: dict | None, score_threshold: float = 0.3) -> Image.Image:
    """One image twice, side by side: its ground truth (a frame result from ``TaskDataModule.truth_of``) and the
    prediction, each captioned."""
    tiles = [caption(draw_prediction(frame, truth, 0.0), "ground truth")]
    if pred is not None:
        tiles.append(caption(draw_prediction(frame, pred, score_threshold), "prediction"))
    return grid(tiles, cols=len(tiles))


def to_frame(image, mean, std) -> np.ndarray:
    """A normalised (3, H, W) tensor back to the (H, W, 3) uint8 picture the network saw."""
    import torch

    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return np.ascontiguousarray(((image.cpu().float() * s + m).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
