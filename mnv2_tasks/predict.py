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

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import CheckpointError
from .data.inference import EvalPreprocess
from .models.results import frame_result_of

__all__ = ["Predictor", "model_suffixes"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def model_suffixes() -> list[str]:
    """Every model file the Predictor takes: checkpoints, each deployment target's files, weight files."""
    from .quant.targets import model_suffixes as exported

    return [".ckpt", *exported(), *WEIGHT_SUFFIXES]


def _imagenet_classifier(path: Path) -> tuple[torch.nn.Module, dict]:
    """A torchvision / timm MobileNetV2 ImageNet weight file: the network (width read from its tensors) and its input spec."""
    from torchvision.models import MobileNet_V2_Weights

    from .data.inference import transform_spec
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, classification_eval, compose
    from .models import MobileNetV2, load_pretrained
    from .models.pretrained import read_state_dict, width_of

    net = MobileNetV2(num_classes=1000, width_mult=width_of(read_state_dict(path), path))
    report = load_pretrained(net, path)
    if report.missing:
        raise CheckpointError(f"{path}: not a MobileNetV2 ImageNet weight file (missing {report.missing[:5]})")
    spec = {"image_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "eval_transform": transform_spec(compose(classification_eval(224))),
            "class_names": list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])}
    return net.eval(), spec


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
        elif path.suffix == ".ckpt":
            from .checkpoint import load_model

            net = load_model(path, self.device)
            self.task, spec = net.task, net.input_spec
            self._run = self._torch(net, bool(spec.get("channels_last")))
        elif path.suffix in WEIGHT_SUFFIXES:
            net, spec = _imagenet_classifier(path)
            self.task, self._run = net.task, self._torch(net.to(self.device))
        else:
            raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; pass one of {', '.join(model_suffixes())}")
        self.input_spec = spec
        self.class_names: list[str] | None = spec.get("class_names")
        self.category_ids: list[int] | None = spec.get("category_ids")
        self.preprocess = EvalPreprocess(spec)
        self.frame_result = frame_result_of(self.task)

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
        return self.result(self._run(x), 0, tuple(x.shape[-2:]), frame.shape[:2])

    def result(self, out: Any, i: int, input_hw, frame_hw) -> dict:
        """Image ``i`` of a batch's eval-mode outputs as this model's frame result (its network's declaration)."""
        return {"task": self.task, **self.frame_result(out, i, input_hw, frame_hw, self.class_names, self.category_ids)}
