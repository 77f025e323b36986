"""The embedded tracking set: clips of the embedded shapes moving, with ground-truth tracks in MOTChallenge format.

    <root>/track/<seq>/img1/000001.jpg ...
    <root>/track/<seq>/gt/gt.txt          frame,id,x,y,w,h,conf,class,visibility  (1-based frames, pixels)
    <root>/track/<seq>/seqinfo.ini        name, frameRate, seqLength, imWidth, imHeight, imExt

What a tracker meets on a robot, at the embedded detector's scale (the shapes, sizes and backgrounds of the detection
set): objects moving at their own speed, crossing one another (the later-drawn one occludes: its ``visibility`` < 1),
entering and leaving through the borders, and, in half of the clips, a camera that pans (the whole scene drifts).
Boxes are those of the visible pixels, so a fully hidden object has no ground-truth row for that frame.
Generated once from a seed (``ensure_track_set``), like the images.
"""

from __future__ import annotations

import configparser
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .shapes import _SHAPES, _background, _distinct_colour, _shape_polygon

__all__ = ["ensure_track_set", "read_mot_gt", "read_seqinfo"]

SIZE = 160


def _clip(rng: np.random.Generator, frames: int, size: int, pan: bool):
    """One clip: frames (list of uint8 images) and its ground-truth rows."""
    margin = 0.5 * size
    bg = _background(rng, int(size + 2 * margin), int(size + 2 * margin))  # a wider world the camera pans over
    bg_mean = bg.reshape(-1, 3).mean(0)
    cam_v = rng.uniform(-1.2, 1.2, 2) if pan else np.zeros(2)
    objects = []
    for k in range(int(rng.integers(3, 6))):
        r = float(rng.uniform(0.1, 0.22) * size)
        enter = int(rng.integers(0, frames // 3)) if k >= 2 else 0  # some objects come in later...
        leave = int(rng.integers(2 * frames // 3, frames + 1)) if k == 4 else frames  # ...and one may go
        speed = rng.uniform(0.8, 2.5)
        a = rng.uniform(0, 2 * math.pi)
        start = rng.uniform(r, size - r, 2) if enter == 0 else np.array([rng.choice([-r * 0.5, size + r * 0.5]), rng.uniform(r, size - r)])
        if enter:  # head into the frame
            a = 0.0 if start[0] < 0 else math.pi
            a += rng.uniform(-0.5, 0.5)
        objects.append({"id": k + 1, "kind": int(rng.integers(0, len(_SHAPES))), "r": r, "p0": start,
                        "v": speed * np.array([math.cos(a), math.sin(a)]), "enter": enter, "leave": leave,
                        "angle": float(rng.uniform(0, 2 * math.pi)), "spin": float(rng.uniform(-0.05, 0.05)),
                        "colour": _distinct_colour(rng, bg_mean)})
    images, rows = [], []
    for f in range(frames):
        off = margin + cam_v * f
        x0, y0 = int(round(np.clip(off[0], 0, 2 * margin))), int(round(np.clip(off[1], 0, 2 * margin)))
        img = Image.fromarray(np.ascontiguousarray(bg[y0:y0 + size, x0:x0 + size]))
        draw = ImageDraw.Draw(img)
        occupancy = np.full((size, size), -1, np.int32)
        full: dict[int, int] = {}
        for o in objects:
            if not o["enter"] <= f < o["leave"]:
                continue
            t = f - o["enter"]
            if t == 0:
                o["p"] = o["p0"] + (np.array([x0, y0]) - margin)  # world position: where it appears on screen
            else:
                o["p"] = o["p"] + o["v"]
            p = o["p"] - (np.array([x0, y0]) - margin)  # on screen: the world moves against the camera
            rel = o["v"] - cam_v
            for d in range(2):  # bounce (relative to the camera) off a box a little larger than the view
                if (p[d] < -0.2 * size and rel[d] < 0) or (p[d] > 1.2 * size and rel[d] > 0):
                    o["v"][d] = -rel[d] + cam_v[d]
            poly = _shape_polygon(_SHAPES[o["kind"]], p[0], p[1], o["r"], o["angle"] + o["spin"] * t)
            m = Image.new("L", (size, size), 0)
            ImageDraw.Draw(m).polygon(poly, fill=1)
            mask = np.asarray(m, dtype=bool)
            if not mask.any():
                continue
            draw.polygon(poly, fill=o["colour"])
            occupancy[mask] = o["id"]
            full[o["id"]] = int(mask.sum())
        for oid, n in full.items():
            vis = occupancy == oid
            if not vis.any():
                continue
            ys, xs = np.nonzero(vis)
            kind = next(o["kind"] for o in objects if o["id"] == oid)
            rows.append((f + 1, oid, int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1),
                         1, kind + 1, round(float(vis.sum()) / n, 3)))
        images.append(np.asarray(img.filter(ImageFilter.GaussianBlur(0.6))))
    return images, rows


def ensure_track_set(root: str | Path, num_clips: int = 6, frames: int = 60, fps: int = 10, seed: int = 7,
                     size: int = SIZE) -> Path:
    """``<root>/track``: the embedded tracking clips (made once; a complete set is reused). Returns the folder."""
    out = Path(root) / "track"
    stamp = out / "COMPLETE"
    want = f"{num_clips} {frames} {fps} {seed} {size}"
    if stamp.is_file() and stamp.read_text() == want:
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for c in range(num_clips):
        name = f"shapes-{c + 1:02d}"
        images, rows = _clip(rng, frames, size, pan=c % 2 == 1)
        (tmp / name / "img1").mkdir(parents=True)
        (tmp / name / "gt").mkdir()
        for f, im in enumerate(images):
            Image.fromarray(im).save(tmp / name / "img1" / f"{f + 1:06d}.jpg", quality=92)
        (tmp / name / "gt" / "gt.txt").write_text("".join(",".join(str(v) for v in r) + "\n" for r in rows))
        (tmp / name / "seqinfo.ini").write_text(
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate={fps}\nseqLength={frames}\nimWidth={size}\nimHeight={size}\n"
            f"imExt=.jpg\ncameraMotion={'pan' if c % 2 else 'static'}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stamp.write_text(want)
    return out


def read_seqinfo(seq: Path) -> dict:
    cp = configparser.ConfigParser()
    cp.read(seq / "seqinfo.ini")
    s = cp["Sequence"]
    return {"name": s.get("name", seq.name), "fps": float(s.get("frameRate", 30)), "length": int(s.get("seqLength", 0)),
            "im_dir": s.get("imDir", "img1"), "ext": s.get("imExt", ".jpg")}


def read_mot_gt(path: Path, min_visibility: float = 0.0) -> dict[int, list[tuple[int, list[float]]]]:
    """``frame -> [(id, [x, y, w, h])]`` of a MOTChallenge ``gt.txt`` (rows with conf 0 are ignored, as MOT does)."""
    out: dict[int, list] = {}
    for line in path.read_text().splitlines():
        v = line.split(",")
        if len(v) < 6:
            continue
        if len(v) >= 7 and float(v[6]) == 0:
            continue
        if len(v) >= 9 and float(v[8]) < min_visibility:
            continue
        out.setdefault(int(v[0]), []).append((int(v[1]), [float(x) for x in v[2:6]]))
    return out
