"""How a network's eval-mode outputs become one frame's result: what the Predictor, the prediction CLI and
the validation drawings show. Each ``TaskNet`` declares its reader (``TaskNet.frame_result``); the
multi-task network composes the detector's and the segmenter's. ``frame_result_of(task)`` gives an exported
file's reader from the task it records, through the network classes that declare it.

Every reader takes image ``i`` of a batch's outputs ``out`` (network input ``input_hw``) and answers in the
pixels of a ``frame_hw`` frame:

- classification: ``probs`` (K,) and ``topk`` [(label, name, score), ...] (5 best);
- detection: ``boxes`` (M, 4) xyxy frame pixels, ``scores`` (M,), ``labels`` (M,) in 1..K,
  ``category_ids`` (M,) (the data set's ids), ``names`` (M,);
- segmentation: ``mask`` (H, W) uint8 class ids in frame pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["classification_result", "detection_result", "segmentation_result", "multitask_result", "frame_result_of"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _name(class_names: list[str] | None, j: int) -> str:
    return class_names[j] if class_names and 0 <= j < len(class_names) else str(j)


def classification_result(out: Any, i: int, input_hw, frame_hw, class_names=None, category_ids=None) -> dict:
    probs = torch.as_tensor(out).float()[i].softmax(-1).cpu().numpy()
    top = np.argsort(-probs)[:5]
    return {"probs": probs, "topk": [(int(j), _name(class_names, int(j)), float(probs[j])) for j in top]}


def detection_result(out: Any, i: int, input_hw, frame_hw, class_names=None, category_ids=None) -> dict:
    from ..metrics.coco_eval import boxes_to_original

    det = out[i]
    labels = _np(det["labels"]).astype(np.int64, copy=False)
    # detection labels count the background as 0: label l is class l - 1 of the names and ids
    ids = np.asarray(category_ids, dtype=np.int64)[labels - 1] if category_ids else labels
    names = np.asarray(class_names, dtype=object)[labels - 1].tolist() if class_names else [str(lab) for lab in labels]
    return {"boxes": boxes_to_original(det["boxes"], input_hw, frame_hw),
            "scores": _np(det["scores"]).astype(np.float32, copy=False), "labels": labels, "category_ids": ids, "names": names}


def segmentation_result(out: Any, i: int, input_hw, frame_hw, class_names=None, category_ids=None) -> dict:
    logits = torch.as_tensor(out).float()[i:i + 1].cpu()
    if tuple(logits.shape[-2:]) != tuple(frame_hw):  # evaluated at another size: back to the frame
        logits = F.interpolate(logits, size=tuple(frame_hw), mode="bilinear", align_corners=False)
    return {"mask": logits.argmax(1)[0].numpy().astype(np.uint8)}


def multitask_result(out: Any, i: int, input_hw, frame_hw, class_names=None, category_ids=None) -> dict:
    """The detector's result on ``out["detections"]`` and the segmenter's on ``out["segmentation"]``."""
    return {**detection_result(out["detections"], i, input_hw, frame_hw, class_names, category_ids),
            **segmentation_result(out["segmentation"], i, input_hw, frame_hw, class_names, category_ids)}


def frame_result_of(task: str):
    """The reader the networks of ``task`` declare (an exported file knows its task, not its network class)."""
    from . import contract

    cls = contract.TaskNet.for_task(task)
    return cls.frame_result
