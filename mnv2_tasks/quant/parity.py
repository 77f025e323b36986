"""An exported file in its runtime against PyTorch on the same images: per-output differences and task-level agreement."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .model_file import ExportedModel

__all__ = ["compare_outputs", "format_report", "check_failures"]


def _as_tuple(out) -> tuple:
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(out)


@torch.no_grad()
def compare_outputs(reference: nn.Module, ort_model: ExportedModel, images: torch.Tensor) -> dict:
    """Run ``reference`` (the ``DeployModule`` that was exported, or its int8 twin) and the exported file on ``images``.

    Returns, per output name: ``max_abs`` / ``mean_abs`` difference and the reference's ``scale``
    (max |value|) for float outputs, ``equal`` fraction for integer outputs, and where the output
    is a score map: ``argmax_agree`` (classes / pixels that get the same argmax). Detection
    (``num_detections``): ``same_count`` fraction of images with as many detections, and ``empty`` when neither side
    found a detection in any image: then nothing was compared, and the check must not pass (``check_failures``).
    """
    ref = [t.detach().cpu().numpy() for t in _as_tuple(reference(images))]
    got = ort_model.run(images)
    report: dict = {"images": int(images.shape[0])}
    for name, r in zip(ort_model.output_names, ref):
        g = got[name]
        entry: dict = {"shape": list(g.shape)}
        if g.shape != r.shape:
            entry["shape_mismatch"] = f"onnx {list(g.shape)} vs torch {list(r.shape)}"
        elif np.issubdtype(r.dtype, np.floating):
            d = np.abs(g.astype(np.float64) - r.astype(np.float64))
            entry.update(max_abs=float(d.max()) if d.size else 0.0, mean_abs=float(d.mean()) if d.size else 0.0,
                         scale=float(np.abs(r).max()) if r.size else 0.0)
            if name == "logits" and r.ndim >= 2:
                entry["argmax_agree"] = float((g.argmax(1) == r.argmax(1)).mean())
        else:
            entry["equal"] = float((g == r).mean()) if r.size else 1.0
        report[name] = entry
    if "num_detections" in ort_model.output_names:
        k = ort_model.output_names.index("num_detections")
        report["empty"] = bool(np.asarray(ref[k]).sum() == 0 and np.asarray(got["num_detections"]).sum() == 0)
    return report


def check_failures(path, checks: dict[str, dict]) -> list[str]:
    """What makes an export's check fail outright: a check of detections where both sides found none (two empty
    outputs agree whatever the file computes)."""
    return [f"{path}: {name}: neither PyTorch nor the file found a detection in any check image, so nothing was compared; "
            "check on other images (--check-images) or with the eval post-processing (--postprocess eval)"
            for name, rep in checks.items() if rep.get("empty")]


def format_report(title: str, report: dict) -> str:
    lines = [f"{title} ({report['images']} images):"]
    for name, e in report.items():
        if not isinstance(e, dict):
            continue
        if "shape_mismatch" in e:
            lines.append(f"  {name}: SHAPE MISMATCH {e['shape_mismatch']}")
        elif "max_abs" in e:
            extra = f", argmax agreement {e['argmax_agree']:.4f}" if "argmax_agree" in e else ""
            lines.append(f"  {name} {e['shape']}: max |diff| {e['max_abs']:.3g}, mean |diff| {e['mean_abs']:.3g} "
                         f"(max |value| {e['scale']:.3g}){extra}")
        else:
            lines.append(f"  {name} {e['shape']}: equal {e['equal']:.4f}")
    return "\n".join(lines)
