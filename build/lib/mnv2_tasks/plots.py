"""Training curves from Lightning's CSV log, as a PNG a person can glance at."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path


# panels as a person reads a run: the losses together, then each family of validation metrics
_FAMILIES = (("loss", lambda k: "loss" in k or k.split("/")[-1] in ("bbox_regression", "classification", "seg", "ce", "aux")),
             ("COCO mAP", lambda k: k.startswith("val/mAP")), ("COCO recall", lambda k: k.startswith("val/AR")),
             ("segmentation", lambda k: k.split("/")[-1] in ("mIoU", "pixel_acc", "mAcc")),
             ("IoU per class", lambda k: k.startswith("val/iou_")), ("classification", lambda k: k.split("/")[-1] in ("top1", "top5")))


def _panels(series: dict[str, list[tuple[float, float]]]) -> list[tuple[str, list[str]]]:
    """(title, series) per panel; series that never change (image counts, anchor coverage) are left out."""
    keys = sorted(k for k, v in series.items() if len({round(y, 12) for _, y in v}) > 1 or len(v) == 1 and "loss" in k)
    panels, used = [], set()
    for title, member in _FAMILIES:
        group = [k for k in keys if member(k) and k not in used]
        if group:
            panels.append((title, group))
            used.update(group)
    panels += [(k, [k]) for k in keys if k not in used and not k.split("/")[-1].startswith("num_")]
    return panels


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """Training curves grouped into panels (losses; each validation metric family). ``None`` if nothing was logged."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None) or key.startswith("lr-"):
                    continue
                try:
                    v = float(value)
                except ValueError:
                    continue
                if math.isfinite(v):
                    series[key].append((step, v))
    panels = _panels(series)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)
