"""Run a checkpoint on an image, a folder of images or a video; write the predictions drawn on them.

    python tools/predict.py outputs/detection/.../checkpoints/last.ckpt photo.jpg --out preds/
    python tools/predict.py last.ckpt images/ --out preds/ --json        # also predictions.json
    python tools/predict.py last.ckpt clip.mp4 --out preds/               # writes clip.pred.mp4

The task (classification, detection, segmentation), the input size and the class names come
from the checkpoint. Detection boxes and segmentation masks are mapped back to each input's
original resolution.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnv2_tasks import load_model  # noqa: E402
from mnv2_tasks.data.images import read_rgb  # noqa: E402
from mnv2_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from mnv2_tasks.visualize import draw_classification, draw_detections, draw_segmentation  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def preprocess(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, size, size) normalized."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(net: torch.nn.Module, image: np.ndarray, size: int, score_threshold: float):
    """Returns (drawn PIL image, JSON-able prediction) for one RGB image."""
    h, w = image.shape[:2]
    names = net.input_spec.get("class_names")
    out = net(preprocess(image, size))
    if net.task == "classification":
        probs = out.softmax(-1)[0].numpy()
        top = np.argsort(-probs)[:5]
        pred = [{"label": int(i), "name": names[i] if names else str(i), "score": float(probs[i])} for i in top]
        return draw_classification(image, probs, names), pred
    if net.task == "detection":
        det = out[0]
        scale = torch.tensor([w / size, h / size, w / size, h / size])
        boxes = (det["boxes"] * scale).numpy()
        scores, labels = det["scores"].numpy(), det["labels"].numpy()
        # detection labels count the background as 0: names[label - 1]
        det_names = ["background", *names] if names else None
        pred = [{"box_xyxy": [round(float(v), 1) for v in b], "score": float(s), "label": int(lab),
                 "name": det_names[lab] if det_names else str(int(lab))}
                for b, s, lab in zip(boxes, scores, labels) if s >= score_threshold]
        return draw_detections(image, boxes, scores, labels, det_names, score_threshold), pred
    if net.task == "segmentation":
        logits = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].numpy().astype(np.uint8)
        classes, counts = np.unique(mask, return_counts=True)
        pred = {"pixels_per_class": {int(c): int(n) for c, n in zip(classes, counts)}}
        return draw_segmentation(image, mask), pred
    raise SystemExit(f"unknown task {net.task!r} in the checkpoint")


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    if not path.exists():
        raise SystemExit(f"{path}: no such file or folder")
    return [path]


def run_video(net, path: Path, out_dir: Path, size: int, score_threshold: float) -> list:
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"{path}: cannot open this video (codec or file problem)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, results = None, []
    out_path = out_dir / f"{path.stem}.pred.mp4"
    for i in tqdm(range(n) if n else iter(int, 1), desc=path.name):
        ok, frame = cap.read()
        if not ok:
            break
        drawn, pred = predict(net, frame[:, :, ::-1].copy(), size, score_threshold)
        if writer is None:
            writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.size)
        writer.write(np.asarray(drawn)[:, :, ::-1])
        results.append({"frame": i, "prediction": pred})
    cap.release()
    if writer is not None:
        writer.release()
    print(f"written: {out_path}")
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", type=Path, help="training checkpoint (.ckpt) of this package")
    p.add_argument("input", type=Path, help="an image, a folder of images, or a video file")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    p.add_argument("--size", type=int, help="input size (default: the size the checkpoint was trained at)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detection: draw boxes above this score")
    p.add_argument("--json", action="store_true", help="also write predictions.json")
    args = p.parse_args(argv)

    net = load_model(args.ckpt)
    size = args.size or net.input_spec.get("image_size")
    if not size:
        raise SystemExit(f"{args.ckpt}: the checkpoint does not record its input size; pass --size")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.input.suffix.lower() in VIDEO_SUFFIXES:
        results[str(args.input)] = run_video(net, args.input, args.out, size, args.score_threshold)
    else:
        from tqdm import tqdm

        for path in tqdm(_inputs(args.input), desc="predict"):
            drawn, pred = predict(net, read_rgb(path), size, args.score_threshold)
            drawn.save(args.out / f"{path.stem}.pred.png")
            results[str(path)] = pred
        print(f"written: {len(results)} images to {args.out}/")
    if args.json:
        (args.out / "predictions.json").write_text(json.dumps(results, indent=1))
        print(f"written: {args.out / 'predictions.json'}")


if __name__ == "__main__":
    main()
