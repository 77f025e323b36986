"""The Predictor's overhead: the whole call (preprocessing, the model, mapping back) against the bare model call.

    python -m mnv2_tasks.benchmarks.predictor                          # a PTQ int8 detector of the embedded default
    python -m mnv2_tasks.benchmarks.predictor --model <run>/model.int8.onnx

On an embedded validation frame at the default 160 px, batch 1, ``--threads`` ORT threads:
``Predictor(frame)`` against ``session.run`` on the already preprocessed tensor, in alternating
rounds (median of the rounds' medians, p99 over all runs). The difference is what the API adds; the
Predictor's own steps are timed alone too, in the same rounds: the preprocessing, reading the runtime's
outputs back, and mapping the detections to the frame. The whole pipeline a robot runs is timed in the same rounds:
the same call with ByteTrack (``track=True``), and decoding the JPEG file + that call (writing excluded).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

from .common import cpu_int8_flags, times_ms, timing_parser
from .multitask import int8_onnx_file

__all__ = ["run"]


def run(args) -> str:
    from ..data.images import read_rgb
    from ..predict import Predictor
    from ..quant.export import export_datamodule
    from ..quant.model_file import outputs_from_export
    from ..quant.ptq import calibration_batches

    model = args.model
    if model is None:  # the embedded detection default, quantized with the package quantizer
        dm = export_datamodule("detection", [])
        model = int8_onnx_file("detection", None, 160, calibration_batches(dm.train_dataloader(), 32),
                           Path(tempfile.mkdtemp(prefix="bench_predictor_")), [])
        jpeg = next(iter(sorted(Path(dm.val_img_dir).glob("*.jpg"))))
        frame = read_rgb(jpeg)
    else:
        from PIL import Image

        frame = (np.random.default_rng(0).random((160, 160, 3)) * 255).astype(np.uint8)
        jpeg = Path(tempfile.mkdtemp(prefix="bench_predictor_")) / "frame.jpg"
        Image.fromarray(frame).save(jpeg, quality=92)
    predictor = Predictor(model, threads=args.threads)
    tracked = Predictor(model, threads=args.threads, track=True)
    runner = predictor._run
    session, name = runner.session, runner.input_name
    images = predictor.preprocess(frame).unsqueeze(0)
    x = np.ascontiguousarray(images.numpy())  # as the runner feeds it
    raw = runner.run(images)
    hw = tuple(images.shape[-2:])
    out = outputs_from_export(runner.format, raw, runner.meta, hw)
    runs = {"ONNX Runtime session.run (preprocessed tensor)": lambda: session.run(None, {name: x}),
            "Predictor(frame): preprocessing + model + mapping back": lambda: predictor(frame),
            "alone: preprocessing (the eval pipeline)": lambda: predictor.preprocess(frame),
            "alone: reading the outputs back": lambda: outputs_from_export(runner.format, raw, runner.meta, hw),
            "alone: mapping back to the frame": lambda: predictor.result(out, 0, hw, frame.shape[:2]),
            "Predictor(frame, track=True): + ByteTrack": lambda: tracked(frame),
            "pipeline: decode the JPEG + Predictor + ByteTrack": lambda: tracked(read_rgb(jpeg))}
    meds: dict[str, list[float]] = {k: [] for k in runs}
    every: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            t = times_ms(fn, args.warmup, args.repeats)
            meds[k].append(statistics.median(t))
            every[k] += t
    bare, full, *steps, with_track, pipeline = (statistics.median(meds[k]) for k in runs)
    lines = [f"{Path(model).name}, frame {frame.shape[1]}x{frame.shape[0]}, batch 1, {args.threads} threads, "
             f"CPU int8 path: {cpu_int8_flags()}; median of {args.rounds} rounds x {args.repeats} runs", "",
             "| call | p50 (ms) | p99 (ms) |", "|---|---:|---:|"]
    lines += [f"| {k} | {statistics.median(meds[k]):.3f} | {np.percentile(every[k], 99):.3f} |" for k in runs]
    lines += ["", f"API overhead: {full - bare:.3f} ms = {100 * (full - bare) / bare:.1f}% of the model's time; "
              f"the Predictor's steps alone: {sum(steps):.3f} ms = {100 * sum(steps) / bare:.1f}%",
              f"tracking adds {with_track - full:.3f} ms = {100 * (with_track - full) / full:.1f}% to the Predictor's call; the pipeline "
              f"(decode + call + tracking) is {pipeline:.3f} ms = {pipeline / bare:.2f}x the model call alone"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = timing_parser(__doc__, repeats=200, warmup=20)
    p.add_argument("--model", default=None, help="an .onnx (or .ckpt) to time; default: a PTQ int8 embedded detector")
    print(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
