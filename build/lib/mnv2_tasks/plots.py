"""Training curves from Lightning's CSV log, as a PNG a person can glance at."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """One panel per logged quantity (losses per step, validation metrics per epoch). ``None`` if nothing was logged."""
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
    keys = sorted(k for k in series if k.endswith("loss")) + sorted(k for k in series if not k.endswith("loss"))
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs, ys = zip(*series[key])
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)
