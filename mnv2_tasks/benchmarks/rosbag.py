"""What reading and writing ROS 2 bags adds to the model's own time per frame.

    python -m mnv2_tasks.benchmarks.rosbag          # the embedded detection default: fp32 PyTorch, and int8 in ONNX Runtime

A bag of ``--frames`` embedded validation frames (160 px; raw ``rgb8`` Image and JPEG
CompressedImage, MCAP) goes through ``predict_bag`` into an MCAP bag of Detection2DArray
messages (``--score-threshold`` 0.3, as the command line's default). The time the Predictor
itself took is subtracted from the whole run: the rest is reading, decoding, building and writing
messages. Medians over ``--rounds`` runs; untrained weights (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["run"]


def _float_detector_ckpt(path: Path) -> Path:
    """An untrained embedded-default detector saved as a checkpoint of this package."""
    from omegaconf import OmegaConf

    from ..checkpoint import build_net
    from ..config import compose_train_config
    from ..quant.export import export_datamodule

    spec = OmegaConf.to_container(compose_train_config(["task=detection", "pretrain=none"]).model.net, resolve=True)
    net = build_net(spec)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "mnv2_tasks": {"task": "detection", "net": spec, "input": export_datamodule("detection", []).input_spec()}}, path)
    return path


class _Timed:
    def __init__(self, predictor) -> None:
        self.predictor, self.ms = predictor, []

    def __call__(self, frame):
        t0 = time.perf_counter()
        out = self.predictor(frame)
        self.ms.append((time.perf_counter() - t0) * 1000)
        return out


def run(args) -> str:
    from ..data.images import read_rgb
    from ..predict import Predictor
    from ..quant.export import export_datamodule
    from ..quant.ptq import calibration_batches
    from ..rosbag_io import predict_bag, write_image_bag
    from .common import cpu_int8_flags
    from .multitask import int8_onnx_file

    tmp = Path(tempfile.mkdtemp(prefix="bench_rosbag_"))
    dm = export_datamodule("detection", [])
    frames = [read_rgb(f) for f in sorted(Path(dm.val_img_dir).glob("*.jpg"))[: args.frames]]
    models = {"fp32 PyTorch (.ckpt)": _float_detector_ckpt(tmp / "det.ckpt"),
              "int8 ONNX Runtime (.onnx)": int8_onnx_file("detection", None, 160, calibration_batches(dm.train_dataloader(), 32), tmp, [])}
    lines = [f"{len(frames)} frames of 160x160, MCAP in and out, {args.threads} threads, CPU int8 path: {cpu_int8_flags()}; "
             f"median of {args.rounds} runs", "", "| model | input messages | model (ms/frame) | bag read + write (ms/frame) | added |",
             "|---|---|---:|---:|---:|"]
    torch.set_num_threads(args.threads)
    for kind in ("rgb8", "jpeg"):
        bag = tmp / f"in_{kind}"
        write_image_bag(bag, frames, kind=kind)
        for name, path in models.items():
            model_ms, extra_ms = [], []
            for r in range(args.rounds):
                timed = _Timed(Predictor(path, threads=args.threads))
                out = tmp / f"out_{kind}_{r}"
                t0 = time.perf_counter()
                predict_bag(timed, bag, "/camera/image_raw", out, score_threshold=0.3)
                total = (time.perf_counter() - t0) * 1000
                shutil.rmtree(out)
                model_ms.append(sum(timed.ms[1:]) / max(1, len(timed.ms) - 1))  # the first call warms up
                extra_ms.append((total - sum(timed.ms)) / len(timed.ms))
            m, e = statistics.median(model_ms), statistics.median(extra_ms)
            msg = "Image rgb8" if kind == "rgb8" else "CompressedImage jpeg"
            lines.append(f"| {name} | {msg} | {m:.2f} | {e:.2f} | {100 * e / m:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    print(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
