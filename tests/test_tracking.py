"""ByteTrack: ids that survive crossings and occlusions, low-score boxes that keep a track alive, lost tracks dropped."""

from __future__ import annotations

import numpy as np
import pytest

from mnv2_tasks.tracking import ByteTrack


def _crossing(frames: int = 40, occlude: range = range(18, 23), low_score: range = range(0)):
    """Two boxes of one class crossing horizontally at constant speed; around the crossing the rear one is hidden
    (no detection) for ``occlude`` frames and seen with a low score in ``low_score`` frames."""
    rng = np.random.default_rng(0)
    out = []
    for f in range(frames):
        a = np.array([10 + 4 * f, 50, 40 + 4 * f, 80], float)      # moving right
        b = np.array([170 - 4 * f, 54, 200 - 4 * f, 84], float)    # moving left, a little lower
        boxes, scores = [a + rng.normal(0, 0.5, 4)], [0.9]
        if f not in occlude:
            boxes.append(b + rng.normal(0, 0.5, 4))
            scores.append(0.3 if f in low_score else 0.85)
        out.append((np.array(boxes), np.array(scores), np.zeros(len(boxes), int), [0, 1][: len(boxes)]))
    return out


@pytest.mark.parametrize("case", ["occluded", "low_scores"])
def test_ids_survive_a_crossing(case):
    frames = _crossing(occlude=range(18, 23)) if case == "occluded" else _crossing(occlude=range(0), low_score=range(15, 26))
    tracker = ByteTrack(frame_rate=30)
    seen: dict[int, set] = {0: set(), 1: set()}
    for boxes, scores, labels, truth in frames:
        ids = tracker.update(boxes, scores, labels)
        for k, obj in enumerate(truth):
            if ids[k]:
                seen[obj].add(int(ids[k]))
    assert seen[0] == {1} and seen[1] == {2}, seen  # one id per object, from the first frame to the last


def test_low_score_boxes_keep_a_track_that_high_only_association_loses():
    """The paper's point: the low-score boxes of a dimmed object keep its track (and id); with them ignored (low
    threshold = high threshold) the object has no id from the frame it dims."""
    frames = _crossing(occlude=range(0), low_score=range(15, 40))
    byte, high_only = ByteTrack(track_buffer=5), ByteTrack(track_low_thresh=0.5, track_buffer=5)
    got: dict[str, list] = {"byte": [], "high": []}
    for boxes, scores, labels, _ in frames:
        for name, tr in (("byte", byte), ("high", high_only)):
            got[name].append(int(tr.update(boxes, scores, labels)[1]))
    assert got["byte"] == [2] * 40
    assert got["high"] == [2] * 15 + [0] * 25


def test_classes_never_share_a_track_and_lost_tracks_expire():
    tracker = ByteTrack(track_buffer=3, frame_rate=30)
    box = np.array([[10, 10, 40, 40]], float)
    assert tracker.update(box, [0.9], [1]).tolist() == [1]
    assert tracker.update(box, [0.9], [2]).tolist() == [0]  # same place, other class: not track 1 (a new, unconfirmed one)
    assert tracker.update(box, [0.9], [2]).tolist() == [2]
    for _ in range(5):
        tracker.update(np.zeros((0, 4)), [], [])
    assert tracker.tracks == []
    tracker.reset()
    assert tracker.update(box, [0.9], [1]).tolist() == [1]


def test_predictor_selection_and_tracking_before_anything_is_written(tiny_detector, shapes_root, tmp_path):
    """--conf / --classes / --max-det hold in JSON, YOLO txt and CSV; --track gives ids stable over a repeated frame."""
    import csv
    import json

    from mnv2_tasks.data.images import read_rgb
    from mnv2_tasks.predict import Predictor
    from mnv2_tasks.predict_cli import main as predict_main

    images = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:4]
    scores = np.concatenate([Predictor(tiny_detector.last)(read_rgb(f))["scores"] for f in images])
    conf = float(np.quantile(scores, 0.99))  # keeps a handful
    assert (scores < conf).any() and (scores >= conf).any()
    for f in images:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f.name).write_bytes(f.read_bytes())
    assert predict_main([str(tiny_detector.last), str(tmp_path / "in"), "--out", str(tmp_path / "p"), "--json", "--save-txt",
                         "--save-csv", "--conf", str(conf), "--max-det", "3", "--no-draw"]) == 0
    recs = json.loads((tmp_path / "p" / "predictions.json").read_text())
    rows = list(csv.DictReader((tmp_path / "p" / "predictions.csv").open()))
    txt = [line.split() for f in (tmp_path / "p" / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    assert recs and len(recs) == len(rows) == len(txt)
    assert min(r["score"] for r in recs) >= conf and min(float(r["score"]) for r in rows) >= conf
    assert min(float(t[5]) for t in txt) >= conf - 1e-5
    assert all(r["image_size"] == [96, 96] and r["name"] in ("circle", "square", "triangle", "star") for r in recs)
    per_image = {}
    for r in recs:
        per_image[r["file_name"]] = per_image.get(r["file_name"], 0) + 1
    assert max(per_image.values()) <= 3
    # classes by name
    one = recs[0]["name"]
    p = Predictor(tiny_detector.last, conf=conf, classes=[one])
    assert all(n == one for f in images for n in p(read_rgb(f))["names"])
    # tracking a still scene: the same ids every frame
    frame = read_rgb(images[0])
    top = float(Predictor(tiny_detector.last)(frame)["scores"][:3].min())  # the tiny detector's scores are low: thresholds under its best three
    p = Predictor(tiny_detector.last, track=True, tracker={"track_high_thresh": top, "new_track_thresh": top, "track_low_thresh": top / 2})
    ids = [sorted(p(frame)["track_ids"].tolist()) for _ in range(5)]
    assert ids[0] and all(i == ids[0] for i in ids) and 0 not in ids[0]


def test_a_threshold_below_the_baked_one_is_refused():
    from mnv2_tasks.models.detection_postprocess import DEPLOY_POSTPROCESS, config_to_meta
    from mnv2_tasks.predict_select import Selection, check_request

    meta = {"postprocess_mode": "deploy", **config_to_meta(DEPLOY_POSTPROCESS)}
    with pytest.raises(ValueError, match=r"m.onnx: --conf 0.05 is below the 0.3 the file keeps.*--postprocess eval"):
        check_request(Selection(conf=0.05), meta, "m.onnx")
    with pytest.raises(ValueError, match=r"--max-det 100 is more than the 50 boxes"):
        check_request(Selection(max_det=100), meta, "m.onnx")
    check_request(Selection(conf=0.5, max_det=10, iou=0.3), meta, "m.onnx")  # asking for less is fine


def test_tracking_set_and_its_evaluation(tiny_detector, tmp_path):
    """The embedded clips in MOTChallenge format, and a detector + tracker scored on them by motmetrics; ByteTrack fed
    the ground truth itself switches no id (so the clips' ids and boxes agree with the metric's reading), and loses
    only the first frame of the tracks that start after the first frame (a new track is confirmed by its second box)."""
    import motmetrics as mm

    from mnv2_tasks.data.shapes_video import ensure_track_set, read_mot_gt, read_seqinfo
    from mnv2_tasks.track_eval import evaluate_tracking, iou_distance

    root = ensure_track_set(tmp_path, num_clips=2, frames=12)
    seqs = sorted(root.iterdir())
    assert [s.name for s in seqs if s.is_dir()] == ["shapes-01", "shapes-02"]
    info = read_seqinfo(root / "shapes-01")
    assert info["fps"] == 10 and info["length"] == 12 and len(list((root / "shapes-01" / "img1").glob("*.jpg"))) == 12
    gt = read_mot_gt(root / "shapes-01" / "gt" / "gt.txt")
    assert len({i for rows in gt.values() for i, _ in rows}) >= 3
    # the ground truth tracked by ByteTrack as if it were detections: every id kept
    tracker, acc = ByteTrack(frame_rate=10), mm.MOTAccumulator(auto_id=False)
    for f in range(1, 13):
        rows = gt.get(f, [])
        xywh = np.array([b for _, b in rows], float).reshape(-1, 4)
        ids = tracker.update(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], np.full(len(rows), 0.9), np.zeros(len(rows), int))
        kept = ids > 0  # the tracked boxes only, as the Predictor reports them
        acc.update([i for i, _ in rows], ids[kept].tolist(), iou_distance(xywh, xywh[kept]), frameid=f)
    got = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "num_misses"], name="gt")
    late = {i for f, rows in gt.items() if f > 1 for i, _ in rows} - {i for i, _ in gt.get(1, [])}
    assert got["num_switches"]["gt"] == 0 and got["num_misses"]["gt"] <= len(late) and got["idf1"]["gt"] > 0.9
    m = evaluate_tracking(tiny_detector.last, root, tracker={"track_high_thresh": 0.05, "new_track_thresh": 0.05,
                                                             "track_low_thresh": 0.01})
    assert set(m) == {"shapes-01", "shapes-02", "OVERALL", "timing"}
    assert 0.0 <= m["OVERALL"]["idf1"] <= 1.0 and m["OVERALL"]["num_objects"] == sum(len(r) for r in gt.values()) + sum(
        len(r) for r in read_mot_gt(root / "shapes-02" / "gt" / "gt.txt").values())
