"""``Predictor``: any model file of the package on an RGB frame, answering in the frame's pixels.

    from mnv2_tasks import Predictor
    p = Predictor("outputs/detection/<run>/checkpoints/best-059.ckpt")   # or model.int8.onnx / .xml / .pte, a .pth
    out = p(frame)           # frame: (H, W, 3) uint8 RGB, any size
    out["boxes"], out["scores"], out["labels"], out["category_ids"], out["names"]

Preprocessing is the model's evaluation pipeline (``data/inference.py``), the network (or the
exported file in its runtime) answers as in evaluation, and boxes go back to the frame with the mapping
evaluation uses (``metrics.coco_eval.boxes_to_original``), so a prediction is exactly what the
reported metric scored. What a frame's result holds is the network's declaration
(``TaskNet.frame_result``, ``models/results.py``; a multi-task model gives both groups): ``probs`` and
``topk``; ``boxes``, ``scores``, ``labels``, ``category_ids``, ``names`` (every detection evaluation
scores, best first: thresholds are for the caller); ``mask``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import CheckpointError
from .data.inference import EvalPreprocess
from .models.results import frame_result_of
from .predict_select import Selection, check_request, select, take

__all__ = ["Predictor", "model_suffixes"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".h5")  # .h5: Keras's ImageNet files (models/keras_weights.py)


def model_suffixes() -> list[str]:
    """Every model file the Predictor takes: checkpoints, each deployment target's files, weight files."""
    from .quant.targets import model_suffixes as exported

    return [".ckpt", *exported(), *WEIGHT_SUFFIXES]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet classes in the standard order (sorted WordNet ids), as ``"<wnid> <name>"``: what Keras's
    ``decode_predictions`` gives (wnid, name), from torchvision's names and the WordNet ids shipped with the package."""
    from torchvision.models import MobileNet_V2_Weights

    wnids = (Path(__file__).parent / "data" / "imagenet_wnids.txt").read_text().split()
    return [f"{w} {n}" for w, n in zip(wnids, MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])]


def _imagenet_classifier(path: Path) -> tuple[torch.nn.Module, dict]:
    """A torchvision / timm / Keras MobileNetV2 ImageNet weight file: the network (width read from its tensors; Keras's
    with TensorFlow's padding) and its input spec (Keras's: [-1, 1] inputs at the file's resolution)."""
    from .data.inference import transform_spec
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, classification_eval, compose
    from .models import MobileNetV2, load_pretrained
    from .models.keras_weights import KERAS_MEAN, KERAS_STD, is_keras_h5, keras_resolution
    from .models.pretrained import read_state_dict, width_of

    keras = is_keras_h5(path)
    net = MobileNetV2(num_classes=1000, width_mult=width_of(read_state_dict(path), path),
                      padding="tf_same" if keras else "symmetric")
    report = load_pretrained(net, path)
    if report.missing:
        raise CheckpointError(f"{path}: not a MobileNetV2 ImageNet weight file (missing {report.missing[:5]})")
    size = (keras_resolution(path) or 224) if keras else 224
    mean, std = (KERAS_MEAN, KERAS_STD) if keras else (IMAGENET_MEAN, IMAGENET_STD)
    spec = {"image_size": size, "mean": list(mean), "std": list(std),
            "eval_transform": transform_spec(compose(classification_eval(size), mean=mean, std=std)),
            "class_names": imagenet_class_names()}
    return net.eval(), spec


class Predictor:
    """A model file (``.ckpt``; ``.onnx``, OpenVINO ``.xml``, ExecuTorch ``.pte``; torchvision/timm ``.pth``) behind one call.

    Args:
        model: path of the model file.
        device: ``"cpu"`` or ``"cuda"`` (PyTorch files; exported files run in their runtime on the CPU).
        threads: the runtime's threads (exported files).
        conf, iou, classes, max_det: what is kept of each frame's detections (``predict_select.Selection``), checked
            against the post-processing an exported file has baked in.
        track: give every detection a track id stable from frame to frame (ByteTrack, ``tracking.py``); the frames
            must then come in order, from one stream (``reset()`` starts another). Only tracked boxes are returned.
        frame_rate: the stream's frames per second (how long a lost track is kept).
        tracker: ``ByteTrack``'s settings (``track_high_thresh``, ``new_track_thresh``, ``track_buffer``, ...).
    """

    def __init__(self, model: str | Path, device: str = "cpu", threads: int = 2, conf: float | None = None,
                 iou: float | None = None, classes=None, max_det: int | None = None, track: bool = False,
                 frame_rate: float = 30.0, tracker: dict | None = None) -> None:
        self.selection = Selection(conf, iou, list(classes) if classes is not None else None, max_det)
        path = Path(model)
        if not path.is_file():
            raise CheckpointError(f"{path}: model file not found; pass one of {', '.join(model_suffixes())}")
        self.path, self.device = path, torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here; use --device cpu")
        from .quant.targets import model_suffixes as exported

        if path.name.endswith(tuple(exported())):  # a deployment target's file (quant.targets.TARGETS)
            from .quant.runners import open_model

            ort = open_model(path, threads)
            self.task, spec, self._run = ort.task, ort.input_spec, ort
            baked = ort.meta
        elif path.suffix == ".ckpt":
            from .checkpoint import load_model

            net = load_model(path, self.device)
            self.task, spec, baked = net.task, net.input_spec, {}  # post-processing in PyTorch: nothing baked in
            self._run = self._torch(net, bool(spec.get("channels_last")))
        elif path.suffix in WEIGHT_SUFFIXES:
            net, spec = _imagenet_classifier(path)
            self.task, self._run, baked = net.task, self._torch(net.to(self.device)), {}
        else:
            raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; pass one of {', '.join(model_suffixes())}")
        self.input_spec = spec
        self.class_names: list[str] | None = spec.get("class_names")
        self.category_ids: list[int] | None = spec.get("category_ids")
        self.preprocess = EvalPreprocess(spec)
        self.frame_result = frame_result_of(self.task)
        check_request(self.selection, baked, str(path))
        self.tracker = None
        self._track_ms, self.last_timing = 0.0, {}
        if track:
            from .tracking import ByteTrack

            self.tracker = ByteTrack(**{"frame_rate": frame_rate, **(tracker or {})})

    def reset(self) -> None:
        """A new stream: the tracker forgets its tracks, ids start again at 1."""
        if self.tracker is not None:
            self.tracker.reset()

    def _torch(self, net: torch.nn.Module, channels_last: bool = False) -> Callable[[torch.Tensor], Any]:
        """``net`` on a batch, in the memory format evaluation ran in (the same kernels, so the same floats)."""
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        @torch.inference_mode()
        def run(images: torch.Tensor):
            return net(images.to(self.device).contiguous(memory_format=memory_format))

        return run

    def __call__(self, frame: np.ndarray) -> dict:
        """Predictions for one (H, W, 3) uint8 RGB frame, in the frame's pixels (see the module docstring). The time of
        each stage is left in ``last_timing`` (ms: ``preprocess``, ``model``, ``postprocess``, ``tracking``)."""
        t0 = time.perf_counter()
        x = self.preprocess(frame).unsqueeze(0)  # (1, 3, h, w)
        t1 = time.perf_counter()
        out = self._run(x)
        t2 = time.perf_counter()
        self._track_ms = 0.0
        pred = self.result(out, 0, tuple(x.shape[-2:]), frame.shape[:2])
        t3 = time.perf_counter()
        self.last_timing = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3,
                            "postprocess": (t3 - t2) * 1e3 - self._track_ms, "tracking": self._track_ms}
        return pred

    def select(self, pred: dict) -> dict:
        """``pred`` with what the caller keeps (``conf``, ``iou``, ``classes``, ``max_det``) and, when tracking, the
        tracked boxes with their ``track_ids`` (the tracker sees the low-score boxes too, as ByteTrack needs)."""
        if "boxes" not in pred:
            return pred
        if self.tracker is None:
            return select(pred, self.selection)
        sel = self.selection
        pool = select(pred, Selection(min(sel.conf if sel.conf is not None else 1.0, self.tracker.low), sel.iou, sel.classes,
                                      sel.max_det))
        t = time.perf_counter()
        ids = self.tracker.update(pool["boxes"], pool["scores"], pool["labels"])
        self._track_ms = (time.perf_counter() - t) * 1e3
        pool["track_ids"] = ids
        keep = np.flatnonzero((ids > 0) & (np.asarray(pool["scores"]) >= (sel.conf or 0.0)))
        return take(pool, keep)

    def result(self, out: Any, i: int, input_hw, frame_hw) -> dict:
        """Image ``i`` of a batch's eval-mode outputs as this model's frame result (its network's declaration)."""
        return self.select({"task": self.task, **self.frame_result(out, i, input_hw, frame_hw, self.class_names, self.category_ids)})
