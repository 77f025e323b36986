"""ROS 2 bags in, vision_msgs out: bags built from embedded validation images, predicted, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnv2_tasks.data.images import read_rgb
from mnv2_tasks.predict import Predictor
from mnv2_tasks.predict_cli import main as predict_main
from mnv2_tasks.rosbag_io import list_image_topics, read_frames, typestore, write_image_bag


def make_bag(path: Path, images: list[Path], storage: str = "mcap", kind: str = "rgb8", topic: str = "/camera/image_raw") -> list:
    """A rosbag2 of ``images`` on ``topic`` (Image in ``kind`` encoding, or CompressedImage jpeg/png); returns the stamps."""
    return write_image_bag(path, [read_rgb(f) for f in images], topic, kind, storage)


def read_out(bag: Path, topic: str) -> list:
    from rosbags.rosbag2 import Reader

    store = typestore()
    assert [f.suffix for f in bag.iterdir() if f.name != "metadata.yaml"] == [".mcap"]  # MCAP storage
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        assert conns and conns[0].msgdef.data  # the definition travels with the bag
        return [(log_time, store.deserialize_cdr(raw, c.msgtype)) for c, log_time, raw in r.messages(connections=conns)]


@pytest.fixture
def det_ckpt(tiny_detector):
    return tiny_detector.last


@pytest.mark.parametrize("storage,kind", [("mcap", "rgb8"), ("sqlite3", "bgr8"), ("mcap", "jpeg"), ("sqlite3", "png"), ("mcap", "mono8")])
def test_detections_bag_matches_the_predictor_frame_by_frame(det_ckpt, shapes_root, tmp_path, storage, kind):
    images = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:4]
    stamps = make_bag(tmp_path / "in", images, storage, kind)
    assert list_image_topics(tmp_path / "in")[0][0] == "/camera/image_raw"
    assert predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "out"),
                         "--score-threshold", "0"]) == 0
    out = read_out(tmp_path / "out", "/mnv2/detections")
    assert len(out) == len(images)  # one Detection2DArray per input frame
    predictor = Predictor(det_ckpt)
    assert sum(len(m.detections) for _, m in out) > 0
    for (log_time, msg), stamp, frame in zip(out, stamps, read_frames(tmp_path / "in", "/camera/image_raw")):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == stamp and msg.header.frame_id == frame.frame_id
        assert log_time == frame.log_time
        ref = predictor(frame.frame)
        keep = ref["scores"] >= 0
        assert len(msg.detections) == int(keep.sum())
        for det, box, score, cat in zip(msg.detections, ref["boxes"][keep], ref["scores"][keep], ref["category_ids"][keep]):
            hyp = det.results[0].hypothesis
            assert hyp.class_id == str(cat) and hyp.score == pytest.approx(float(score), abs=1e-6)
            c = det.bbox.center.position
            got = [c.x - det.bbox.size_x / 2, c.y - det.bbox.size_y / 2, c.x + det.bbox.size_x / 2, c.y + det.bbox.size_y / 2]
            assert np.abs(np.array(got) - box).max() <= 0.5


def test_segmentation_masks_bag(tiny_segmenter, shapes_root, tmp_path):
    ckpt = tiny_segmenter.last
    images = sorted((shapes_root / "voc" / "JPEGImages").glob("*.jpg"))[:3]
    make_bag(tmp_path / "in", images, "mcap", "jpeg")
    assert predict_main([str(ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "out")]) == 0
    out = read_out(tmp_path / "out", "/mnv2/segmentation")
    predictor = Predictor(ckpt)
    for (_, msg), frame in zip(out, read_frames(tmp_path / "in", "/camera/image_raw")):
        assert msg.encoding == "mono8" and (msg.height, msg.width) == frame.frame.shape[:2]
        mask = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.width)
        assert np.array_equal(mask, predictor(frame.frame)["mask"])
    assert len(out) == 3


def test_bag_errors_name_the_cause(det_ckpt, shapes_root, tmp_path, capsys):
    images = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:2]
    make_bag(tmp_path / "in", images, "mcap", "rgb8", topic="/front/image")
    with pytest.raises(SystemExit, match=r"error: .*no topic '/camera/image_raw'; its image topics: /front/image \(Image, 2\)"):
        predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "o1")])
    assert predict_main([str(det_ckpt), str(tmp_path / "in"), "--list-topics"]) == 0
    assert "/front/image  sensor_msgs/msg/Image  2 messages" in capsys.readouterr().out
    (tmp_path / "in" / "metadata.yaml").unlink()
    with pytest.raises(SystemExit, match=r"error: .*in: no metadata.yaml"):
        predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/front/image", "--out", str(tmp_path / "o2")])
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    with Writer(tmp_path / "bad", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        t = store.types
        msg = t["sensor_msgs/msg/Image"](header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                         frame_id="c"), height=2, width=2, encoding="16UC1", is_bigendian=0, step=4,
                                         data=np.zeros(8, np.uint8))
        w.write(conn, 1, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    with pytest.raises(SystemExit, match=r"error: /cam: Image encoding '16UC1' is not supported; rgb8, bgr8 and mono8 are"):
        predict_main([str(det_ckpt), str(tmp_path / "bad"), "--topic", "/cam", "--out", str(tmp_path / "o3")])


def test_rate_counts_frames_that_miss_their_budget(det_ckpt, shapes_root, tmp_path, capsys):
    make_bag(tmp_path / "in", sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:3])
    assert predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "out"),
                         "--rate", "1000000"]) == 0
    assert "3 of 3 frames missed the 0.0 ms budget of --rate 1e+06" in capsys.readouterr().out


def test_tracked_bag_carries_the_track_ids(det_ckpt, shapes_root, tmp_path, capsys):
    """--track: every Detection2D.id is the Predictor's track id for that box (a repeated frame: the same ids)."""
    image = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[0]
    make_bag(tmp_path / "in", [image] * 4, "mcap", "rgb8")
    top = float(Predictor(det_ckpt)(next(iter(read_frames(tmp_path / "in", "/camera/image_raw"))).frame)["scores"][:3].min())
    settings = {"track_high_thresh": top, "new_track_thresh": top, "track_low_thresh": top / 2}
    assert predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "out"),
                         "--score-threshold", "0", "--track", "--tracker", *[f"{k}={v}" for k, v in settings.items()]]) == 0
    printed = capsys.readouterr().out
    assert "stages, ms p50/p99" in printed and all(f"{k} " in printed for k in ("preprocess", "model", "postprocess", "tracking"))
    out = read_out(tmp_path / "out", "/mnv2/detections")
    ids = [sorted(int(d.id) for d in m.detections) for _, m in out]
    assert ids[0] and all(i == ids[0] for i in ids)
    ref = Predictor(det_ckpt, track=True, tracker=settings)
    frame = next(iter(read_frames(tmp_path / "in", "/camera/image_raw"))).frame
    assert sorted(ref(frame)["track_ids"].tolist()) == ids[0]


def test_annotated_topic_shows_the_drawn_frames(det_ckpt, shapes_root, tmp_path):
    import cv2

    from mnv2_tasks.visualize import draw_prediction

    images = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:2]
    make_bag(tmp_path / "in", images, "mcap", "rgb8")
    assert predict_main([str(det_ckpt), str(tmp_path / "in"), "--topic", "/camera/image_raw", "--out", str(tmp_path / "out"),
                         "--score-threshold", "0.1", "--annotated"]) == 0
    out = read_out(tmp_path / "out", "/mnv2/annotated/compressed")
    frames = list(read_frames(tmp_path / "in", "/camera/image_raw"))
    assert len(out) == len(frames)
    for (_, msg), f in zip(out, frames):
        got = cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR)[:, :, ::-1]
        want = np.asarray(draw_prediction(f.frame, Predictor(det_ckpt)(f.frame), 0.1))
        assert msg.format == "jpeg" and got.shape == want.shape
        luma = lambda im: im.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731 - JPEG keeps luma, subsamples colour
        assert np.abs(luma(got) - luma(want)).mean() < 6  # the drawing, through JPEG
        assert np.abs(luma(got) - luma(f.frame)).mean() > 2 * np.abs(luma(got) - luma(want)).mean()  # and not the bare frame
