"""What ``mnv2-predict`` writes for each frame: ``predictions.json`` records, YOLO ``--save-txt`` lines, ``--save-csv``
rows, the output names and the output video."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .metrics.coco_eval import xyxy_to_xywh

__all__ = ["json_records", "yolo_lines", "csv_rows", "CSV_FIELDS", "unique_stem", "video_writer"]


def json_records(name: str, pred: dict, size: tuple[int, int] | None = None, timestamp: float | None = None) -> list[dict] | dict:
    """What ``predictions.json`` holds for one frame (detection: COCO result records, with the class name, the image
    size ``[H, W]``, the track id when tracking and, for video, the frame's time in seconds)."""
    rec: dict = {}
    frame = {**({"image_size": list(size)} if size else {}), **({"timestamp": round(timestamp, 6)} if timestamp is not None else {})}
    if "boxes" in pred:
        xywh = xyxy_to_xywh(pred["boxes"])  # evaluation's boxes (val_predictions.json), rounded to 1e-3 pixel
        ids = pred.get("track_ids")
        dets = [{"file_name": name, "category_id": int(c), "name": str(n), "bbox": [round(float(v), 3) for v in b],
                 "score": float(s), **frame, **({"track_id": int(ids[k])} if ids is not None else {})}
                for k, (b, s, c, n) in enumerate(zip(xywh, pred["scores"], pred["category_ids"], pred["names"]))]
        if not {"topk", "mask"} & set(pred):  # boxes alone: COCO result records, as val_predictions.json
            return dets
        rec["detections"] = dets
    if "topk" in pred:
        rec["topk"] = [{"label": i, "name": n, "score": s} for i, n, s in pred["topk"]]
    if "mask" in pred:
        classes, counts = np.unique(pred["mask"], return_counts=True)
        rec["pixels_per_class"] = {int(c): int(n) for c, n in zip(classes, counts)}
    return {"file_name": name, **frame, **rec}


def yolo_lines(pred: dict, size: tuple[int, int]) -> str:
    """A frame's detections as Ultralytics' ``--save-txt`` writes them: ``class cx cy w h score [track id]`` normalised,
    class = label - 1 (the background is not a YOLO class)."""
    h, w = size
    ids = pred.get("track_ids")
    out = []
    for k, (b, s, lab) in enumerate(zip(pred["boxes"], pred["scores"], pred["labels"])):
        x0, y0, x1, y1 = (float(v) for v in b)
        line = f"{int(lab) - 1} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f} {float(s):.5f}"
        out.append(line + (f" {int(ids[k])}" if ids is not None else ""))
    return "".join(line + "\n" for line in out)


CSV_FIELDS = ["file_name", "frame", "timestamp", "track_id", "class_id", "name", "score", "x0", "y0", "x1", "y1"]


def csv_rows(name: str, index: int, timestamp: float | None, pred: dict) -> list[dict]:
    ids = pred.get("track_ids")
    return [{"file_name": name, "frame": index, "timestamp": "" if timestamp is None else round(timestamp, 6),
             "track_id": int(ids[k]) if ids is not None else "", "class_id": int(c), "name": str(n), "score": round(float(s), 5),
             **{f: round(float(v), 3) for f, v in zip(("x0", "y0", "x1", "y1"), b)}}
            for k, (b, s, c, n) in enumerate(zip(pred["boxes"], pred["scores"], pred["category_ids"], pred["names"]))]


def unique_stem(name: str, kind: str, used: set[str]) -> str:
    """The output name of a frame: its file's stem, with its suffix where another input has the stem (a.jpg, a.png);
    a video frame: ``<video>_<index>``."""
    p = Path(name.replace("#", "_")) if kind == "video" else Path(name)
    stem = p.stem if kind == "images" else p.name
    if stem in used:
        stem = f"{p.stem}_{p.suffix.lstrip('.')}" if p.suffix else f"{stem}_{len(used)}"
    used.add(stem)
    return stem


def video_writer(path: Path, shape, fps: float | None):
    """An MP4 at the source's frame rate (25 where the source says none): H.264 ('avc1', what browsers play) where the
    installed OpenCV has an encoder for it, else MPEG-4 Part 2 ('mp4v'), with a note."""
    import cv2

    size = (shape[1], shape[0])
    rate = float(fps) if fps and fps > 0 else 25.0
    for code in ("avc1", "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), rate, size)
        if writer.isOpened():
            if code != "avc1":
                print(f"note: {path.name} is MPEG-4 Part 2 ('mp4v'): this OpenCV has no H.264 encoder, so browsers may not "
                      "play it (re-encode: ffmpeg -i in.mp4 -c:v libx264 out.mp4)", file=sys.stderr)
            return writer
        writer.release()
    raise OSError(f"{path}: OpenCV cannot write an MP4 here (no 'avc1' or 'mp4v' encoder)")
