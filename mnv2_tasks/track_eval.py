"""A detector + tracker on MOTChallenge-format sequences, scored with ``motmetrics`` (IDF1, MOTA, ID switches, ...),
the way the field scores trackers. ``tools/track_eval.py`` is its command line.

    python tools/track_eval.py outputs/detection/<run>/checkpoints/last.ckpt          # the embedded tracking clips
    python tools/track_eval.py model.int8.onnx --seqs /data/MOT17/train --conf 0.3

HOTA (with DetA and AssA) comes from TrackEval where it is installed. Its wheel requires ``opencv-python``, which
conflicts with this package's ``opencv-python-headless``, so it is no dependency here: ``pip install --no-deps
trackeval`` (its metrics import nothing else this package lacks; the headless ``cv2`` serves its one ``import cv2``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .tracking import box_iou

__all__ = ["evaluate_tracking", "iou_distance", "main"]

METRICS = ["idf1", "idp", "idr", "mota", "motp", "num_switches", "num_fragmentations", "mostly_tracked", "mostly_lost",
           "num_false_positives", "num_misses", "num_objects", "precision", "recall"]


def iou_distance(gt_xywh: np.ndarray, hyp_xywh: np.ndarray, max_distance: float = 0.5) -> np.ndarray:
    """motmetrics' ``distances.iou_matrix`` (``1 - IoU``, NaN beyond ``max_distance``: no match), which 1.4.0 cannot
    run under NumPy 2 (``np.asfarray``)."""
    return _distance(box_iou(_xyxy(gt_xywh), _xyxy(hyp_xywh)), max_distance)


def _xyxy(xywh) -> np.ndarray:
    b = np.asarray(xywh, np.float64).reshape(-1, 4)
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


def _distance(iou: np.ndarray, max_distance: float) -> np.ndarray:
    return np.where(1.0 - iou > max_distance, np.nan, 1.0 - iou)


def _hota(frames: list[tuple[list[int], list[int], np.ndarray]]) -> dict | None:
    """TrackEval's HOTA of one sequence (``frames``: ground-truth ids, tracker ids, their IoU matrix), or ``None``
    where TrackEval is not installed."""
    try:
        from trackeval.metrics import HOTA
    except ImportError:
        return None
    g = {i: k for k, i in enumerate(sorted({i for f in frames for i in f[0]}))}
    h = {i: k for k, i in enumerate(sorted({i for f in frames for i in f[1]}))}
    data = {"num_gt_dets": sum(len(f[0]) for f in frames), "num_tracker_dets": sum(len(f[1]) for f in frames),
            "num_gt_ids": len(g), "num_tracker_ids": len(h),
            "gt_ids": [np.array([g[i] for i in f[0]], dtype=int) for f in frames],
            "tracker_ids": [np.array([h[i] for i in f[1]], dtype=int) for f in frames],
            "similarity_scores": [f[2] for f in frames]}
    return HOTA().eval_sequence(data)


def evaluate_tracking(model: str | Path, seqs: str | Path, conf: float | None = None, tracker: dict | None = None,
                      threads: int = 2, iou: float = 0.5) -> dict:
    """Track every sequence under ``seqs`` (folders with ``seqinfo.ini``, ``img1/``, ``gt/gt.txt``) with ``model``;
    returns the overall metrics (``OVERALL``) and each sequence's, plus the tracker's share of the frame time."""
    import motmetrics as mm

    from .data.images import read_rgb
    from .data.shapes_video import read_mot_gt, read_seqinfo
    from .predict import Predictor

    seq_dirs = sorted(p for p in Path(seqs).iterdir() if (p / "seqinfo.ini").is_file())
    if not seq_dirs:
        raise FileNotFoundError(f"{seqs}: no MOTChallenge sequences (folders with seqinfo.ini, img1/, gt/gt.txt)")
    accs, names = [], []
    hota_seqs: dict[str, dict | None] = {}
    frame_ms, track_ms = [], []
    from tqdm.auto import tqdm

    for seq in tqdm(seq_dirs, desc="sequences", leave=False):
        info = read_seqinfo(seq)
        gt = read_mot_gt(seq / "gt" / "gt.txt")
        predictor = Predictor(model, threads=threads, conf=conf, track=True, frame_rate=info["fps"], tracker=tracker)
        acc = mm.MOTAccumulator(auto_id=False)
        seq_frames = []
        frames = sorted((seq / info["im_dir"]).glob(f"*{info['ext']}"))
        for k, f in enumerate(frames, 1):
            pred = predictor(read_rgb(f))
            if k > 1:  # the first frame pays the warm-up; the Predictor times its own stages
                frame_ms.append(sum(predictor.last_timing.values()))
                track_ms.append(predictor.last_timing["tracking"])
            rows = gt.get(k, [])
            gt_ids, hyp_ids = [i for i, _ in rows], [int(i) for i in pred["track_ids"]]
            sim = box_iou(_xyxy([b for _, b in rows]), np.asarray(pred["boxes"], np.float64).reshape(-1, 4))
            acc.update(gt_ids, hyp_ids, _distance(sim, 1 - iou), frameid=k)
            seq_frames.append((gt_ids, hyp_ids, sim))
        accs.append(acc)
        hota_seqs[info["name"]] = _hota(seq_frames)
        names.append(info["name"])
    mh = mm.metrics.create()
    summary = mh.compute_many(accs, metrics=METRICS, names=names, generate_overall=True)
    out = {name: {m: float(summary.loc[name, m]) for m in METRICS} for name in summary.index}
    if all(v is not None for v in hota_seqs.values()):
        from trackeval.metrics import HOTA

        hota_seqs["OVERALL"] = HOTA().combine_sequences(dict(hota_seqs))
        for name, res in hota_seqs.items():
            out[name].update({k.lower(): float(np.mean(res[k])) for k in ("HOTA", "DetA", "AssA")})
    out["timing"] = {"frame_ms_p50": float(np.median(frame_ms)), "track_ms_p50": float(np.median(track_ms)),
                     "track_ms_p99": float(np.percentile(track_ms, 99)), "frames": len(frame_ms)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="track_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a detector or multi-task model file (.ckpt, .onnx, .xml, .pte)")
    p.add_argument("--seqs", default=None, help="a folder of MOTChallenge sequences (default: the embedded tracking clips)")
    p.add_argument("--conf", type=float, default=None, help="minimum score of a reported box")
    p.add_argument("--track-high", type=float, default=None, help="ByteTrack's first-association threshold")
    p.add_argument("--new-track", type=float, default=None, help="ByteTrack's threshold to start a track")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    a = p.parse_args(argv)
    if a.seqs is None:
        from .data.shapes import default_data_dir
        from .data.shapes_video import ensure_track_set

        a.seqs = ensure_track_set(default_data_dir())
    tracker = {k: v for k, v in (("track_high_thresh", a.track_high), ("new_track_thresh", a.new_track)) if v is not None}
    m = evaluate_tracking(a.model, a.seqs, a.conf, tracker or None, a.threads)
    o = m["OVERALL"]
    hota = f"HOTA {o['hota']:.3f} (DetA {o['deta']:.3f}, AssA {o['assa']:.3f})  " if "hota" in o else "HOTA: pip install --no-deps trackeval  "
    print(f"{a.seqs}: {hota}IDF1 {o['idf1']:.3f}  MOTA {o['mota']:.3f}  ID switches {int(o['num_switches'])}  "
          f"recall {o['recall']:.3f}  precision {o['precision']:.3f}  MT {int(o['mostly_tracked'])}  ML {int(o['mostly_lost'])}")
    t = m["timing"]
    print(f"per frame (pre-processing, model, post-processing, tracking) p50 {t['frame_ms_p50']:.2f} ms, of which tracking "
          f"p50 {t['track_ms_p50']:.3f} ms ({100 * t['track_ms_p50'] / t['frame_ms_p50']:.1f}%), p99 {t['track_ms_p99']:.3f} ms")
    if a.out:
        a.out.write_text(json.dumps(m, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
