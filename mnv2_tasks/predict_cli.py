"""``mnv2-predict`` / ``tools/predict.py``: a model file on images, folders, globs, videos, cameras and streams.

    python tools/predict.py <model> photo.jpg                    # .ckpt, .onnx / .xml / .pte (fp32/int8), or a .pth
    python tools/predict.py <model> images/ --json               # predictions.json too
    python tools/predict.py <model> 'shots/*.png' --out preds/
    python tools/predict.py <model> clip.mp4                      # writes preds/clip.pred.mp4
    python tools/predict.py <model> 0                             # camera 0 (OpenCV), until the stream ends or Ctrl-C
    python tools/predict.py <model> rtsp://host/stream --device cuda
    python tools/predict.py mobilenet_v2-b0353104.pth cat.jpg     # top-5 ImageNet classes
    python tools/predict.py <model> drive_bag/ --topic /camera/image_raw --out drive_mnv2   # a ROS 2 bag -> vision_msgs

Pictures with the predictions drawn go to ``--out``; ``--score-threshold`` decides which boxes
are drawn, while ``predictions.json`` holds every detection evaluation scores (detection: COCO
result records in the data set's category ids and original pixels). At the end: per-frame
latency (p50 / p95 ms, frames per second), pre- and post-processing included. A bad image among
good ones is named and skipped; the run then exits with status 1.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .data.images import DataError, read_rgb
from .predict_outputs import CSV_FIELDS, csv_rows, json_records, unique_stem, video_writer, yolo_lines

__all__ = ["main", "frame_sources", "latency_summary"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


class InputError(ValueError):
    """An input that cannot be read at all (missing, empty folder, unopenable stream)."""


# what main and bag_main report in one line: bad inputs, CheckpointError / OnnxFileError of the model file (ValueErrors),
# a missing .bin beside an .xml (an OSError), a runtime not installed (an ImportError naming its extra)
ONE_LINE_ERRORS = (ValueError, OSError, ImportError)


def _video(source, name: str) -> Iterator[tuple[str, np.ndarray | Exception]]:
    """The frames of a video file, camera or stream, opened now: a source that cannot be opened is an ``InputError``
    naming it and the likely fix before any frame is asked for."""
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        if isinstance(source, int):
            raise InputError(f"camera {source}: no such camera, or it is busy (is it connected? is another program using it? "
                             "try another index: 0, 1, ... as /dev/video<N>)")
        if "://" in str(source):
            raise InputError(f"{source}: cannot connect to this stream (is the URL right, and is the stream up and reachable?)")
        raise InputError(f"{source}: cannot decode this video (a codec OpenCV lacks, or a broken file: re-encode it, "
                         "e.g. ffmpeg -i in.mkv -c:v libx264 out.mp4)")

    class Frames:  # an iterator that knows its source's frame rate
        fps = cap.get(cv2.CAP_PROP_FPS) or None

        def __iter__(self):
            return frames()

    def frames() -> Iterator[tuple[str, np.ndarray | Exception]]:
        try:
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield f"{name}#{i}", np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB
                i += 1
        finally:
            cap.release()

    return Frames()


def frame_sources(source: str) -> tuple[str, Iterator[tuple[str, np.ndarray | Exception]]]:
    """``("images" | "video", frames)``: ``(name, RGB frame or the error reading it)`` for every frame of ``source``."""
    path = Path(source)
    if source.isdigit():  # a camera index, as OpenCV numbers them
        return "video", _video(int(source), f"camera{source}")
    if "://" in source:
        return "video", _video(source, "stream")
    if any(c in source for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(source) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{source}: no images match this pattern")
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    elif not path.exists():
        raise InputError(f"{path}: no such file or folder")
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        return "video", _video(str(path), path.stem)
    else:
        files = [path]

    def images() -> Iterator[tuple[str, np.ndarray | Exception]]:
        for f in files:
            try:
                yield str(f), read_rgb(f)
            except DataError as e:
                yield str(f), e

    return "images", images()


def latency_summary(ms: list[float], stages: dict[str, list[float]] | None = None) -> str:
    """The per-frame time (model call with its pre- and post-processing), p50 / p95, frames per second, and each stage
    of the whole pipeline (decode, pre-processing, model, post-processing, tracking, writing) at p50 / p99."""
    if not ms:
        return "no frames"
    p50, p95 = np.percentile(ms, 50), np.percentile(ms, 95)
    text = (f"{len(ms)} frames: p50 {p50:.1f} ms, p95 {p95:.1f} ms, {1000.0 / np.mean(ms):.1f} frames/s (pre- and post-processing "
            "included; a stream's first, warm-up frame left out)")
    if stages:
        total = np.sum([np.asarray(v) for v in stages.values()], axis=0)
        parts = ", ".join(f"{k} {np.percentile(v, 50):.2f}/{np.percentile(v, 99):.2f}" for k, v in stages.items())
        text += (f"\npipeline per frame, ms p50/p99: {parts}; whole {np.percentile(total, 50):.1f}/{np.percentile(total, 99):.1f} "
                 f"= {1000.0 / max(np.mean(total), 1e-9):.1f} frames/s")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnv2-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a .ckpt of this package, an exported .onnx / OpenVINO .xml / ExecuTorch .pte (fp32 or int8), or a torchvision/timm MobileNetV2 .pth")
    p.add_argument("input", help="an image, a folder, a glob ('*.jpg'), a video file, a camera index (0) or a stream URL")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: ./predictions)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="PyTorch model files (ONNX: ONNX Runtime on the CPU)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detection: draw boxes scoring at least this")
    sel = p.add_argument_group("detections kept (before anything is written; checked against an exported file's own)")
    sel.add_argument("--conf", type=float, default=None, help="minimum score of a kept detection")
    sel.add_argument("--iou", type=float, default=None, help="class-wise NMS at this IoU (stricter than the model's)")
    sel.add_argument("--classes", nargs="+", default=None, help="class names or category ids to keep")
    sel.add_argument("--max-det", type=int, default=None, help="at most this many detections per frame, best first")
    sel.add_argument("--track", action="store_true", help="track objects (ByteTrack): a stable id per object, only tracked boxes kept")
    sel.add_argument("--tracker", nargs="+", default=[], metavar="KEY=VALUE",
                     help="ByteTrack settings: track_high_thresh=0.5 track_low_thresh=0.1 new_track_thresh=0.6 track_buffer=30 "
                          "match_thresh=0.8 class_aware=1")
    sel.add_argument("--save-txt", action="store_true", help="labels/<name>.txt per frame: class cx cy w h score [id], normalised")
    sel.add_argument("--save-csv", action="store_true", help="predictions.csv: one row per detection")
    p.add_argument("--json", action="store_true", help="also write predictions.json")
    p.add_argument("--no-draw", action="store_true", help="write no pictures (latency and JSON only)")
    p.add_argument("--show", action="store_true", help="also show each drawn frame in a window (needs a display and an "
                                                       "OpenCV with GUI support; q quits)")
    bag = p.add_argument_group("ROS 2 bags (input: a rosbag2 folder; see mnv2_tasks/rosbag_io.py)")
    bag.add_argument("--topic", help="the image topic to read (sensor_msgs Image or CompressedImage)")
    bag.add_argument("--list-topics", action="store_true", help="print the bag's image topics, types and message counts")
    bag.add_argument("--annotated", action="store_true", help="also write the drawn frames (JPEG) on /mnv2/annotated/compressed")
    bag.add_argument("--rate", type=float, default=None, help="frames per second needed: count the frames that miss 1/rate")
    return p


def _is_bag(path: Path) -> bool:
    """A rosbag2 folder: metadata.yaml, or (an error later) .mcap / .db3 files without it."""
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3")))


def bag_main(args, predictor_factory) -> int:
    """The bag path of ``main``: list the image topics, or predict on one into a new MCAP bag at ``--out``."""
    from .rosbag_io import BagError, list_image_topics, predict_bag

    try:
        if args.list_topics:
            for topic, msgtype, count in list_image_topics(args.input):
                print(f"{topic}  {msgtype}  {count} messages")
            return 0
        if not args.topic:
            topics = ", ".join(t for t, _, _ in list_image_topics(args.input)) or "none"
            raise BagError(f"{args.input}: a bag needs --topic (its image topics: {topics})")
        summary = predict_bag(predictor_factory(), args.input, args.topic, args.out, args.score_threshold, args.rate,
                              annotated=args.annotated)
    except (BagError, *ONE_LINE_ERRORS) as e:
        raise SystemExit(f"error: {e}") from None
    lat = summary["latency_ms"]
    print(f"written: {args.out} (MCAP; {', '.join(summary['topics']) or 'no messages'}), {summary['frames']} frames")
    print(f"latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms"
          + (f"; {summary['missed']} of {summary['frames']} frames missed the {1000 / args.rate:.1f} ms budget of --rate {args.rate:g}"
             if args.rate else ""))
    if summary.get("stages_ms"):
        print("stages, ms p50/p99 (warm-up frame left out): "
              + ", ".join(f"{k} {v['p50']:.2f}/{v['p99']:.2f}" for k, v in summary["stages_ms"].items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``model`` on ``input``; returns the exit status (1 if some input could not be read)."""
    from .predict import Predictor
    from .visualize import draw_prediction

    args = parser().parse_args(argv)
    try:
        if _is_bag(Path(args.input)):  # the model is loaded only once the bag and topic are known to be good
            return bag_main(args, lambda: Predictor(args.model, device=args.device, threads=args.threads, conf=args.conf,
                                                    iou=args.iou, classes=args.classes, max_det=args.max_det, track=args.track,
                                                    tracker=_tracker_args(args.tracker)))
        if args.out.exists() and not args.out.is_dir():
            raise InputError(f"--out {args.out}: a file, not a folder; --out names the folder the outputs go to")
        if args.show:
            _open_window()
        kind, frames = frame_sources(args.input)
        fps = getattr(frames, "fps", None)
        predictor = Predictor(args.model, device=args.device, threads=args.threads, conf=args.conf, iou=args.iou,
                              classes=args.classes, max_det=args.max_det, track=args.track, frame_rate=fps or 30.0,
                              tracker=_tracker_args(args.tracker))
        args.out.mkdir(parents=True, exist_ok=True)
    except ONE_LINE_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
    records: list = []
    rows: list = []
    latency: list[float] = []
    failed = done = 0
    writer = None
    used: set[str] = set()
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "model", "postprocess", "tracking", "writing")}
    from tqdm import tqdm

    def timed(it):  # the time to decode each frame (the source's own iterator does it)
        it = iter(it)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            timed.ms = (time.perf_counter() - t) * 1000
            yield item

    try:
        for index, (name, frame) in enumerate(tqdm(timed(frames), desc="predict", unit="frame", disable=not sys.stderr.isatty())):
            if isinstance(frame, Exception):
                print(f"error: {frame}", file=sys.stderr)
                failed += 1
                continue
            t0 = time.perf_counter()
            pred = predictor(frame)
            done += 1
            warm = index > 0 or kind == "images"  # a stream's first frame pays the warm-up: not in the summary
            if warm:
                latency.append((time.perf_counter() - t0) * 1000)
                stages["decode"].append(timed.ms)
                for k, v in predictor.last_timing.items():
                    stages[k].append(v)
            t_write = time.perf_counter()
            if "topk" in pred and kind == "images":  # the five best classes, as Keras's decode_predictions lists them
                print(f"{name}: " + ", ".join(f"{n} {p:.3f}" for _, n, p in pred["topk"]))
            stamp = index / fps if kind == "video" and fps else None
            rec = json_records(name, pred, frame.shape[:2], stamp)
            records += rec if isinstance(rec, list) else [rec]
            stem = unique_stem(name, kind, used)
            if args.save_txt and "boxes" in pred:
                (args.out / "labels").mkdir(exist_ok=True)
                (args.out / "labels" / f"{stem}.txt").write_text(yolo_lines(pred, frame.shape[:2]))
            if args.save_csv and "boxes" in pred:
                rows += csv_rows(name, index, stamp, pred)
            if not args.no_draw or args.show:
                drawn = np.asarray(draw_prediction(frame, pred, args.score_threshold))
            if args.show:
                import cv2

                cv2.imshow("mnv2-predict", np.ascontiguousarray(drawn[:, :, ::-1]))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if not args.no_draw:
                if kind == "images":
                    from PIL import Image

                    Image.fromarray(drawn).save(args.out / f"{stem}.pred.png")
                else:
                    writer = writer or video_writer(args.out / f"{name.split('#')[0]}.pred.mp4", drawn.shape, fps)
                    writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
            if warm:
                stages["writing"].append((time.perf_counter() - t_write) * 1000)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if writer is not None:
            writer.release()
    if args.json:
        (args.out / "predictions.json").write_text(json.dumps(records, indent=1))
    if args.save_csv:
        import csv

        with (args.out / "predictions.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
    print(f"written: {args.out}/ ({done} frames{', predictions.json' if args.json else ''})")
    print(f"latency: {latency_summary(latency, {k: v for k, v in stages.items() if len(v) == len(latency)})}")
    if kind == "images" and failed:
        print(f"error: {failed} input(s) could not be read (named above); the others were processed", file=sys.stderr)
    return 1 if failed else 0


def _open_window() -> None:
    """``--show``: a window, or a one-line error saying why there is none."""
    import os

    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("--show: no display here (DISPLAY is not set); drop --show and open the written pictures or video")
    try:
        cv2.namedWindow("mnv2-predict", cv2.WINDOW_NORMAL)
    except cv2.error:
        raise InputError("--show: this OpenCV has no window support (opencv-python-headless); drop --show and open the "
                         "written pictures or video, or install opencv-python in its place") from None


def _tracker_args(items: list[str]) -> dict:
    """``--tracker key=value ...`` as ByteTrack's keyword arguments (numbers; ``class_aware`` 0/1)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--tracker {item}: expected key=value, e.g. track_high_thresh=0.4")
        try:
            out[key] = bool(int(value)) if key in ("class_aware", "fuse_score") else (int(value) if key == "track_buffer" else float(value))
        except ValueError:
            raise InputError(f"--tracker {item}: {value!r} is not a number") from None
    return out


if __name__ == "__main__":
    sys.exit(main())
