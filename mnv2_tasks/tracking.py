"""Multi-object tracking: ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", ECCV 2022), written to the paper and its reference code, on any detector's per-frame boxes.

Per frame: every track's box is predicted by a constant-velocity Kalman filter (state ``cx, cy, a, h`` and their
velocities, as SORT / DeepSORT / ByteTrack); the high-score detections are matched to all tracks (tracked and lost)
by IoU with the Hungarian algorithm; then, the paper's point, the low-score detections (occluded, blurred objects) are
matched to the tracks still unmatched, instead of being thrown away; unconfirmed tracks (seen once) get the remaining
high-score detections; new tracks start from the rest above ``new_track_thresh``; a track lost for longer than
``track_buffer`` frames (at 30 fps; scaled by the frame rate) is removed. A matched track keeps its id.

Tracks are per class by default (``class_aware``): a detection never continues a track of another class.

Why not a library: ``supervision`` 0.31 dropped its trackers; Roboflow's ``trackers`` and TrackEval require
``opencv-python``, which conflicts with this package's ``opencv-python-headless``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ByteTrack", "KalmanBoxFilter", "box_iou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w / max(h, 1e-6), h], np.float64)


def _xyah_to_xyxy(m: np.ndarray) -> np.ndarray:
    w, h = m[2] * m[3], m[3]
    return np.array([m[0] - w / 2, m[1] - h / 2, m[0] + w / 2, m[1] + h / 2], np.float64)


class KalmanBoxFilter:
    """The constant-velocity filter of SORT / DeepSORT / ByteTrack on ``(cx, cy, a, h)``: noise proportional to the
    box height (position 1/20, velocity 1/160 of it), the aspect ratio nearly fixed."""

    def __init__(self) -> None:
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)
        self.w_pos, self.w_vel = 1.0 / 20, 1.0 / 160

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.r_[z, np.zeros(4)]
        h = z[3]
        std = [2 * self.w_pos * h, 2 * self.w_pos * h, 1e-2, 2 * self.w_pos * h,
               10 * self.w_vel * h, 10 * self.w_vel * h, 1e-5, 10 * self.w_vel * h]
        return mean, np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        q = np.diag(np.square([self.w_pos * h, self.w_pos * h, 1e-2, self.w_pos * h,
                               self.w_vel * h, self.w_vel * h, 1e-5, self.w_vel * h]))
        return self.F @ mean, self.F @ cov @ self.F.T + q

    def update(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        r = np.diag(np.square([self.w_pos * h, self.w_pos * h, 1e-1, self.w_pos * h]))
        s = self.H @ cov @ self.H.T + r
        gain = np.linalg.solve(s, (cov @ self.H.T).T).T
        return mean + gain @ (z - self.H @ mean), cov - gain @ s @ gain.T


@dataclass
class _Track:
    id: int
    label: int
    score: float
    mean: np.ndarray
    cov: np.ndarray
    last_seen: int
    confirmed: bool = False
    lost: bool = False
    det: int = -1  # the index of this frame's detection it was matched to (-1: none)

    @property
    def box(self) -> np.ndarray:
        return _xyah_to_xyxy(self.mean[:4])


def _match(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment on ``cost`` (rows: tracks, columns: detections) keeping pairs with cost <= ``thresh``."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    rows, cols = linear_sum_assignment(cost)
    pairs = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= thresh]
    used_r, used_c = {r for r, _ in pairs}, {c for _, c in pairs}
    return pairs, [r for r in range(cost.shape[0]) if r not in used_r], [c for c in range(cost.shape[1]) if c not in used_c]


class ByteTrack:
    """ByteTrack on one stream (see the module docstring); ``update`` once per frame, in order.

    Args:
        track_high_thresh: detections from this score on are associated first (the paper's 0.5; on the embedded
            detector 0.4 matches its score range).
        track_low_thresh: detections between this and ``track_high_thresh`` are the second association's.
        new_track_thresh: a detection from this score on that matches nothing starts a track (the paper: high + 0.1).
        match_thresh: the first association keeps pairs with ``1 - IoU`` (times the score, ``fuse_score``) below this.
        track_buffer: frames a lost track is kept for re-identification, at 30 fps (scaled by ``frame_rate``).
        frame_rate: the stream's frames per second.
        class_aware: a track continues only with detections of its class.
        fuse_score: the first association's cost is ``1 - IoU * score`` (ByteTrack's MOT17 setting).
    """

    def __init__(self, track_high_thresh: float = 0.5, track_low_thresh: float = 0.1, new_track_thresh: float = 0.6,
                 match_thresh: float = 0.8, track_buffer: int = 30, frame_rate: float = 30.0, class_aware: bool = True,
                 fuse_score: bool = True) -> None:
        if not 0 <= track_low_thresh <= track_high_thresh <= 1:
            raise ValueError(f"need 0 <= track_low_thresh ({track_low_thresh}) <= track_high_thresh ({track_high_thresh}) <= 1")
        self.high, self.low, self.new = track_high_thresh, track_low_thresh, new_track_thresh
        self.match_thresh, self.class_aware, self.fuse_score = match_thresh, class_aware, fuse_score
        self.max_lost = max(1, int(round(frame_rate / 30.0 * track_buffer)))
        self.kf = KalmanBoxFilter()
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new stream); ids start again at 1."""
        self.tracks: list[_Track] = []
        self.frame = 0
        self._next_id = 1

    def _cost(self, tracks: list[_Track], boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, fuse: bool) -> np.ndarray:
        iou = box_iou(np.array([t.box for t in tracks]).reshape(-1, 4), boxes)
        if fuse:
            iou = iou * scores[None, :]
        cost = 1.0 - iou
        if self.class_aware and cost.size:
            cost[np.array([t.label for t in tracks])[:, None] != labels[None, :]] = 1e6
        return cost

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """One frame's detections (xyxy ``boxes``, ``scores``, ``labels``); returns an id per detection: the id of
        the confirmed track it continues or starts, 0 for a detection no confirmed track carries."""
        self.frame += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
        for t in self.tracks:
            t.det = -1
            if t.lost:
                t.mean[7] = 0.0  # a lost track's height stops changing (the reference code's mean_state[7] = 0)
            t.mean, t.cov = self.kf.predict(t.mean, t.cov)
        high = np.flatnonzero(scores >= self.high)
        low = np.flatnonzero((scores >= self.low) & (scores < self.high))

        def assign(tracks: list[_Track], dets: np.ndarray, thresh: float, fuse: bool) -> tuple[list[_Track], np.ndarray]:
            pairs, free_t, free_d = _match(self._cost(tracks, boxes[dets], scores[dets], labels[dets], fuse), thresh)
            for r, c in pairs:
                t, d = tracks[r], int(dets[c])
                t.mean, t.cov = self.kf.update(t.mean, t.cov, _xyxy_to_xyah(boxes[d]))
                t.score, t.det, t.last_seen, t.lost = float(scores[d]), d, self.frame, False
            return [tracks[r] for r in free_t], dets[free_d]

        confirmed = [t for t in self.tracks if t.confirmed]
        # 1. high-score detections against every confirmed track, tracked or lost
        left, high_left = assign(confirmed, high, self.match_thresh, self.fuse_score)
        # 2. low-score detections against the tracked ones still unmatched (not the lost: a low box rarely starts well)
        left_tracked = [t for t in left if not t.lost]
        unmatched, _ = assign(left_tracked, low, 0.5, False)
        for t in unmatched:
            t.lost = True
        # 3. unconfirmed tracks (seen once) against the high-score detections left; unmatched ones are dropped
        unconfirmed = [t for t in self.tracks if not t.confirmed]
        dead, high_left = assign(unconfirmed, high_left, 0.7, self.fuse_score)
        for t in unconfirmed:
            if t.det >= 0:
                t.confirmed = True
        # 4. new tracks from the confident detections left (confirmed at once on the first frame, as the paper)
        born = []
        for d in high_left:
            if scores[d] >= self.new:
                mean, cov = self.kf.initiate(_xyxy_to_xyah(boxes[d]))
                born.append(_Track(self._next_id, int(labels[d]), float(scores[d]), mean, cov, self.frame,
                                   confirmed=self.frame == 1, det=int(d)))
                self._next_id += 1
        gone = {id(t) for t in dead}
        self.tracks = [t for t in self.tracks if id(t) not in gone and self.frame - t.last_seen <= self.max_lost] + born
        ids = np.zeros(len(boxes), np.int64)
        for t in self.tracks:
            if t.det >= 0 and t.confirmed:
                ids[t.det] = t.id
        return ids
