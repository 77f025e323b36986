"""ROS 2 bags in, standard messages out: a recorded drive or flight through any model file of the package.

    python tools/predict.py <model> <rosbag2 folder> --list-topics
    python tools/predict.py <model> <rosbag2 folder> --topic /camera/image_raw --out out_bag [--rate 30]

Frames come from ``sensor_msgs/msg/Image`` (rgb8, bgr8, mono8) or ``sensor_msgs/msg/CompressedImage``
(jpeg, png) messages of one topic, in MCAP or sqlite3 storage. The output is a new rosbag2 in MCAP
storage with the message definitions embedded (Foxglove and ``ros2 bag play`` read it):

- detection: ``vision_msgs/msg/Detection2DArray`` on ``/mnv2/detections`` (class id = the data
  set's category id as a string, score, box centre and size in the image's pixels);
- segmentation: a mono8 ``sensor_msgs/msg/Image`` of class ids on ``/mnv2/segmentation``;
- classification: ``vision_msgs/msg/Classification`` on ``/mnv2/classification`` (top 5, by class name);
- multi-task models: both the detection and the segmentation topic;
- with ``annotated=True`` (``--annotated``): the frame with its predictions drawn (boxes, ids, masks, classes) as a
  JPEG ``sensor_msgs/msg/CompressedImage`` on ``/mnv2/annotated/compressed``, to look at in Foxglove beside the input.

Every output message's header copies the input's stamp and frame_id, and is logged at the input's
log time, so the two bags play back in sync. Library: ``rosbags`` (pure Python, no ROS install,
reads and writes rosbag2 in both storages, registers message types from their ``.msg`` text);
``vision_msgs`` is not among its stores, so its definitions (vision_msgs 4.x, Humble/Jazzy) are
registered here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["BagError", "BagFrame", "list_image_topics", "read_frames", "predict_bag", "write_image_bag", "typestore", "IMAGE_TYPES"]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DETECTIONS_TOPIC, SEGMENTATION_TOPIC, CLASSIFICATION_TOPIC = "/mnv2/detections", "/mnv2/segmentation", "/mnv2/classification"
ANNOTATED_TOPIC = "/mnv2/annotated/compressed"

VISION_MSGS = {  # vision_msgs 4.x message definitions (ROS 2 Humble and Jazzy)
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                                   "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Classification": "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
}


class BagError(ValueError):
    """A bag, topic or message this tool cannot read; the message names the cause and the fix."""


@dataclass
class BagFrame:
    """One image message: the RGB frame, its header and its log time (ns)."""

    frame: np.ndarray
    sec: int
    nanosec: int
    frame_id: str
    log_time: int


def typestore():
    """ROS 2 Humble's message types plus vision_msgs."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def _reader(bag: str | Path):
    from rosbags.rosbag2 import Reader

    bag = Path(bag)
    if not bag.is_dir():
        raise BagError(f"{bag}: not a folder; a rosbag2 is a folder with metadata.yaml and its .mcap or .db3 files")
    if not (bag / "metadata.yaml").is_file():
        raise BagError(f"{bag}: no metadata.yaml; a rosbag2 folder needs it (re-index the bag with `ros2 bag reindex {bag}`)")
    return Reader(bag)


def list_image_topics(bag: str | Path) -> list[tuple[str, str, int]]:
    """``(topic, message type, message count)`` of the bag's image topics."""
    with _reader(bag) as reader:
        counts: dict[tuple[str, str], int] = {}
        for c in reader.connections:
            if c.msgtype in IMAGE_TYPES:
                counts[(c.topic, c.msgtype)] = counts.get((c.topic, c.msgtype), 0) + c.msgcount
    return [(t, m, n) for (t, m), n in sorted(counts.items())]


def _decode(msg, msgtype: str, topic: str) -> np.ndarray:
    """An Image / CompressedImage message -> (H, W, 3) uint8 RGB."""
    import cv2

    if msgtype.endswith("CompressedImage"):
        fmt = msg.format.lower()
        if not any(k in fmt for k in ("jpeg", "jpg", "png")):
            raise BagError(f"{topic}: CompressedImage format {msg.format!r} is not supported; jpeg and png are")
        bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BagError(f"{topic}: a CompressedImage message does not decode as {msg.format}")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    enc, h, w = msg.encoding.lower(), int(msg.height), int(msg.width)
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(enc)
    if channels is None:
        raise BagError(f"{topic}: Image encoding {msg.encoding!r} is not supported; rgb8, bgr8 and mono8 are "
                       "(convert the topic, e.g. with image_proc)")
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(h, int(msg.step))[:, : w * channels].reshape(h, w, channels)
    if enc == "mono8":
        return np.repeat(rows, 3, axis=2)
    return np.ascontiguousarray(rows[:, :, ::-1] if enc == "bgr8" else rows)


def read_frames(bag: str | Path, topic: str) -> Iterator[BagFrame]:
    """The frames of ``topic``, in log-time order."""
    store = typestore()
    with _reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            listed = ", ".join(f"{t} ({m.split('/')[-1]}, {n})" for t, m, n in list_image_topics(bag)) or "none"
            raise BagError(f"{bag}: no topic {topic!r}; its image topics: {listed}")
        if conns[0].msgtype not in IMAGE_TYPES:
            raise BagError(f"{topic}: messages of type {conns[0].msgtype}; expected one of {', '.join(IMAGE_TYPES)}")
        for conn, log_time, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            yield BagFrame(_decode(msg, conn.msgtype, topic), int(msg.header.stamp.sec), int(msg.header.stamp.nanosec),
                           str(msg.header.frame_id), int(log_time))


class _Messages:
    """Builders of the output messages (types from ``typestore()``)."""

    def __init__(self, store) -> None:
        self.t = store.types

    def header(self, f: BagFrame):
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=f.sec, nanosec=f.nanosec),
                                             frame_id=f.frame_id)

    def detections(self, f: BagFrame, pred: dict, keep: np.ndarray):
        t = self.t
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                             orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, dtype=np.float64))
        dets = []
        ids = np.asarray(pred["track_ids"])[keep] if "track_ids" in pred else [None] * int(np.size(pred["scores"][keep]))
        for (x0, y0, x1, y1), score, cat, tid in zip(pred["boxes"][keep], pred["scores"][keep], pred["category_ids"][keep], ids):
            hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
                hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(int(cat)), score=float(score)), pose=pose)
            center = t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=float(x0 + x1) / 2, y=float(y0 + y1) / 2),
                                                 theta=0.0)
            bbox = t["vision_msgs/msg/BoundingBox2D"](center=center, size_x=float(x1 - x0), size_y=float(y1 - y0))
            dets.append(t["vision_msgs/msg/Detection2D"](header=self.header(f), results=[hyp], bbox=bbox,
                                                         id="" if tid is None else str(int(tid))))  # the track id (--track)
        return t["vision_msgs/msg/Detection2DArray"](header=self.header(f), detections=dets)

    def mask(self, f: BagFrame, mask: np.ndarray):
        h, w = mask.shape
        return self.t["sensor_msgs/msg/Image"](header=self.header(f), height=h, width=w, encoding="mono8", is_bigendian=0,
                                               step=w, data=np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1))

    def annotated(self, f: BagFrame, pred: dict, score_threshold: float):
        import cv2

        from .visualize import draw_prediction

        drawn = np.asarray(draw_prediction(f.frame, pred, score_threshold))
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(drawn[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        return self.t["sensor_msgs/msg/CompressedImage"](header=self.header(f), format="jpeg", data=buf.reshape(-1))

    def classification(self, f: BagFrame, pred: dict):
        hyps = [self.t["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=float(score)) for _, name, score in pred["topk"]]
        return self.t["vision_msgs/msg/Classification"](header=self.header(f), results=hyps)


def predict_bag(predictor: Callable[[np.ndarray], dict], bag: str | Path, topic: str, out: str | Path,
                score_threshold: float | None = None, rate: float | None = None, annotated: bool = False) -> dict:
    """Run ``predictor`` on every frame of ``topic`` and write its messages into a new MCAP bag at ``out``.

    ``score_threshold``: detections below it are not written. ``rate``: frames per second the robot
    needs; the summary counts the frames whose prediction took longer than 1/rate. Returns
    ``{"frames", "latency_ms": {"p50", "p95", "max"}, "missed": ..., "topics": [...]}``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    if out.exists():
        raise BagError(f"{out}: already exists; give --out a new folder for the output bag")
    frames = read_frames(bag, topic)
    first = next(frames, None)  # checks the topic before an output bag is created
    store = typestore()
    build = _Messages(store)
    latency: list[float] = []
    stages: dict[str, list[float]] = {}
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    conns: dict[str, object] = {}
    with writer:
        def write(topic_name: str, msgtype: str, msg, log_time: int) -> None:
            if topic_name not in conns:
                conns[topic_name] = writer.add_connection(topic_name, msgtype, typestore=store)
            writer.write(conns[topic_name], log_time, store.serialize_cdr(msg, msgtype))

        for f in _chain(first, frames) if first is not None else ():
            t0 = time.perf_counter()
            pred = predictor(f.frame)
            latency.append((time.perf_counter() - t0) * 1000)
            for k, v in (getattr(predictor, "last_timing", None) or {}).items():  # a Predictor's stages
                stages.setdefault(k, []).append(v)
            if "boxes" in pred:
                keep = pred["scores"] >= (score_threshold if score_threshold is not None else -1.0)
                write(DETECTIONS_TOPIC, "vision_msgs/msg/Detection2DArray", build.detections(f, pred, keep), f.log_time)
            if "mask" in pred:
                write(SEGMENTATION_TOPIC, "sensor_msgs/msg/Image", build.mask(f, pred["mask"]), f.log_time)
            if "topk" in pred:
                write(CLASSIFICATION_TOPIC, "vision_msgs/msg/Classification", build.classification(f, pred), f.log_time)
            if annotated:
                write(ANNOTATED_TOPIC, IMAGE_TYPES[1], build.annotated(f, pred, score_threshold if score_threshold is not None else 0.3),
                      f.log_time)
    ms = np.asarray(latency) if latency else np.zeros(1)
    summary = {"frames": len(latency), "topics": sorted(conns),
               "latency_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max())}}
    if len(latency) > 1 and stages:  # per stage, p50 / p99, the first (warm-up) frame left out
        summary["stages_ms"] = {k: {"p50": float(np.percentile(v[1:], 50)), "p99": float(np.percentile(v[1:], 99))}
                                for k, v in stages.items() if len(v) == len(latency)}
    if rate:
        summary["missed"] = int((ms > 1000.0 / rate).sum()) if latency else 0
    return summary


def write_image_bag(path: str | Path, frames: list[np.ndarray], topic: str = "/camera/image_raw", kind: str = "rgb8",
                    storage: str = "mcap", start_ns: int = 10**18, period_ns: int = 33_000_000) -> list[tuple[int, int]]:
    """A rosbag2 of RGB ``frames`` on ``topic``: ``Image`` in ``kind`` encoding (rgb8, bgr8, mono8) or
    ``CompressedImage`` (``kind`` jpeg or png), in ``storage`` (mcap or sqlite3); returns the header stamps.
    For tests, benchmarks and trying the bag path without a robot."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    t = store.types
    msgtype = IMAGE_TYPES[1] if kind in ("jpeg", "png") else IMAGE_TYPES[0]
    stamps = []
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(Path(path), version=9, storage_plugin=plugin) as w:
        conn = w.add_connection(topic, msgtype, typestore=store)
        for i, rgb in enumerate(frames):
            log_time = start_ns + i * period_ns
            stamp = (log_time // 10**9, log_time % 10**9)
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp[0], nanosec=stamp[1]),
                                              frame_id=f"cam{i % 2}")
            if msgtype == IMAGE_TYPES[1]:
                _, buf = cv2.imencode(".jpg" if kind == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
                msg = t[msgtype](header=header, format=kind, data=buf.reshape(-1))
            else:
                data = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb.mean(2, keepdims=True).astype(np.uint8)}[kind]
                h, width, c = data.shape
                msg = t[msgtype](header=header, height=h, width=width, encoding=kind, is_bigendian=0, step=width * c,
                                 data=np.ascontiguousarray(data).reshape(-1))
            w.write(conn, log_time, store.serialize_cdr(msg, msgtype))
            stamps.append(stamp)
    return stamps


def _chain(first: BagFrame, rest: Iterator[BagFrame]) -> Iterator[BagFrame]:
    yield first
    yield from rest
