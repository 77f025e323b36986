"""``Predictor``: any model file of the package on an RGB frame, answering in the frame's pixels.

    from mnv2_tasks import Predictor
    p = Predictor("outputs/detection/<run>/checkpoints/best-059.ckpt")   # or model.int8.onnx / .xml / .pte, a .pth
    out = p(frame)           # frame: (H, W, 3) uint8 RGB, any size
    out["boxes"], out["scores"], out["labels"], out["category_ids"], out["names"]

Preprocessing is the model's evaluation pipeline (``data/inference.py``), the network (or the
exported file in its runtime) answers as in evaluation, and boxes go back to the frame with the mapping
evaluation uses (``metrics.coco_eval.boxes_to_original``), so a prediction is exactly what the
reported metric scored. Outputs, by task (a multi-task model gives both groups):

- classification: ``probs`` (K,) and ``topk`` [(label, name, score), ...] (5 best);
- detection: ``boxes`` (M, 4) xyxy frame pixels, ``scores`` (M,), ``labels`` (M,) in 1..K,
  ``category_ids`` (M,) (the data set's ids), ``names`` (M,); every detection evaluation scores
  (the model's evaluation post-processing), best first: thresholds are for the caller;
- segmentation: ``mask`` (H, W) uint8 class ids in frame pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError
from .data.inference import EvalPreprocess
from .metrics.coco_eval import boxes_to_original

__all__ = ["Predictor", "model_suffixes", "frame_result"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def model_suffixes() -> list[str]:
    """Every model file the Predictor takes: checkpoints, each deployment target's files, weight files."""
    from .quant.targets import model_suffixes as exported

    return [".ckpt", *exported(), *WEIGHT_SUFFIXES]


def _imagenet_classifier(path: Path) -> tuple[torch.nn.Module, dict]:
    """A torchvision / timm MobileNetV2 ImageNet weight file: the network (width read off the file) and its input spec."""
    from torchvision.models import MobileNet_V2_Weights

    from .data.inference import transform_spec
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, classification_eval, compose
    from .models import MobileNetV2, load_pretrained

    errors = []
    for width in (1.0, 0.75, 0.5, 0.35, 1.3, 1.4):  # the widths with published weights
        net = MobileNetV2(num_classes=1000, width_mult=width)
        try:
            report = load_pretrained(net, path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if not report.missing:
            spec = {"image_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                    "eval_transform": transform_spec(compose(classification_eval(224))),
                    "class_names": list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])}
            return net.eval(), spec
    raise CheckpointError(f"{path}: not a MobileNetV2 ImageNet weight file of a known width ({errors[-1] if errors else ''})")


class Predictor:
    """A model file (``.ckpt``; ``.onnx``, OpenVINO ``.xml``, ExecuTorch ``.pte``; torchvision/timm ``.pth``) behind one call.

    Args:
        model: path of the model file.
        device: ``"cpu"`` or ``"cuda"`` (PyTorch files; exported files run in their runtime on the CPU).
        threads: the runtime's threads (exported files).
    """

    def __init__(self, model: str | Path, device: str = "cpu", threads: int = 2) -> None:
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
            if not spec:  # written before files recorded their inputs: the export's size
                h, w = (int(v) for v in ort.meta.get("image_size", "0x0").split("x"))
                spec = {"image_size": [h, w] if h else None}
        elif path.suffix == ".ckpt":
            from .checkpoint import load_model

            net = load_model(path, self.device)
            self.task, spec = net.task, net.input_spec
            self._run = self._torch(net, bool(spec.get("channels_last")))
        elif path.suffix in WEIGHT_SUFFIXES:
            net, spec = _imagenet_classifier(path)
            self.task, self._run = "classification", self._torch(net.to(self.device))
        else:
            raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; pass one of {', '.join(model_suffixes())}")
        self.input_spec = spec
        self.class_names: list[str] | None = spec.get("class_names")
        self.category_ids: list[int] | None = spec.get("category_ids")
        self.preprocess = EvalPreprocess(spec)

    def _torch(self, net: torch.nn.Module, channels_last: bool = False) -> Callable[[torch.Tensor], Any]:
        """``net`` on a batch, in the memory format evaluation ran in (the same kernels, so the same floats)."""
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        @torch.inference_mode()
        def run(images: torch.Tensor):
            return net(images.to(self.device).contiguous(memory_format=memory_format))

        return run

    def __call__(self, frame: np.ndarray) -> dict:
        """Predictions for one (H, W, 3) uint8 RGB frame, in the frame's pixels (see the module docstring)."""
        x = self.preprocess(frame).unsqueeze(0)  # (1, 3, h, w)
        return frame_result(self.task, self._run(x), 0, tuple(x.shape[-2:]), frame.shape[:2], self.class_names,
                            self.category_ids)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def frame_result(task: str, out: Any, i: int, input_hw, frame_hw, class_names: list[str] | None = None,
                 category_ids: list[int] | None = None) -> dict:
    """Image ``i`` of a batch's eval-mode outputs ``out`` (network input ``input_hw``) as a ``Predictor`` result
    in the pixels of a ``frame_hw`` frame."""

    def name(j: int) -> str:
        return class_names[j] if class_names and 0 <= j < len(class_names) else str(j)

    result: dict = {"task": task}
    if task == "classification":
        probs = torch.as_tensor(out).float()[i].softmax(-1).cpu().numpy()
        top = np.argsort(-probs)[:5]
        result.update(probs=probs, topk=[(int(j), name(int(j)), float(probs[j])) for j in top])
    if task in ("detection", "multitask"):
        det = out["detections"][i] if task == "multitask" else out[i]
        labels = _np(det["labels"]).astype(np.int64, copy=False)
        # detection labels count the background as 0: label l is class l - 1 of the names and ids
        ids = np.asarray(category_ids, dtype=np.int64)[labels - 1] if category_ids else labels
        names = np.asarray(class_names, dtype=object)[labels - 1].tolist() if class_names else [str(lab) for lab in labels]
        result.update(boxes=boxes_to_original(det["boxes"], input_hw, frame_hw),
                      scores=_np(det["scores"]).astype(np.float32, copy=False), labels=labels, category_ids=ids, names=names)
    if task in ("segmentation", "multitask"):
        logits = torch.as_tensor(out["segmentation"] if task == "multitask" else out).float()[i:i + 1].cpu()
        if tuple(logits.shape[-2:]) != tuple(frame_hw):  # evaluated at another size: back to the frame
            logits = F.interpolate(logits, size=tuple(frame_hw), mode="bilinear", align_corners=False)
        result["mask"] = logits.argmax(1)[0].numpy().astype(np.uint8)
    return result
