"""Deployment table per task: PyTorch eager fp32, ORT fp32, ORT int8 (torchao PT2E: QAT or PTQ), ORT's own static PTQ.

    python tools/benchmark.py --task deploy                               # classification at 224, untrained weights
    python tools/benchmark.py --task deploy --deploy-ckpt classification=outputs/.../last.ckpt \
        --deploy-ckpt detection=det.ckpt --deploy-size 224                # metrics on the embedded val set too
    python -m mnv2_tasks.benchmarks.deploy --deploy-task classification   # standalone

Latency: median of ``--repeats`` runs (x ``--rounds`` alternating rounds, median of medians) at
batch 1 and 8 with ``--threads`` threads (``torch.set_num_threads`` for eager, intra-op threads
for ORT), all measured in this one process. File size of each ``.onnx``. With a checkpoint, each
variant's metric on the embedded validation set through the task's own metric code; without
one, the network is untrained (BatchNorm statistics estimated on embedded images) and the
metric column is empty. The int8 (torchao) model is the QAT graph for a QAT checkpoint, else
PTQ with the package quantizer; the baseline is ``onnxruntime.quantization.quantize_static``
(QDQ, U8S8, per-channel) of the fp32 file, calibrated on the same images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from .common import median_latency_ms, timing_parser

DEFAULT_SIZE = {"classification": 224, "detection": 320, "segmentation": 512}


def add_options(p: argparse.ArgumentParser) -> None:
    """The ``--deploy-*`` options (``--task deploy``)."""
    g = p.add_argument_group("deploy (--task deploy)")
    g.add_argument("--deploy-task", action="append", choices=[*DEFAULT_SIZE, "multitask"],
                   help="repeatable; default: classification; multitask: the one-trunk graph against the two single-task graphs")
    g.add_argument("--deploy-ckpt", action="append", default=[], help="task=checkpoint (float or QAT), repeatable")
    g.add_argument("--deploy-size", type=int, default=None, help="latency input size (default per task)")
    g.add_argument("--deploy-calibration-images", type=int, default=32)
    g.add_argument("--deploy-data-dir", default=None, help="embedded data root (paths.data_dir)")
    g.add_argument("--deploy-out", default=None, help="keep the .onnx files here")


def _untrained_net(task: str, size: int):
    from ..models import MobileNetV2, build_deeplabv3, build_ssdlite

    if task == "classification":
        return MobileNetV2(num_classes=1000, width_mult=1.0)
    if task == "detection":
        return build_ssdlite(num_classes=81, width_mult=1.0, size=size)
    return build_deeplabv3(num_classes=21, width_mult=1.0)


def _images(dm, n: int, train: bool) -> list[torch.Tensor]:
    from ..quant.ptq import calibration_batches

    return calibration_batches(dm.train_dataloader() if train else dm.val_dataloader(), n)


def _ort_static_ptq(fp32_path: Path, out_path: Path, calib: list[torch.Tensor]) -> Path:
    """ONNX Runtime's own static quantization: QDQ, uint8 activations, int8 per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": b[i:i + 1].numpy()} for b in calib for i in range(b.shape[0])])

        def get_next(self):
            return next(self.it, None)

    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    pre.unlink(missing_ok=True)
    return out_path


def _latency(fn, x: torch.Tensor, args) -> float:
    meds = [median_latency_ms(lambda: fn(x), args.warmup, args.repeats) for _ in range(args.rounds)]
    return statistics.median(meds)


def bench_task(task: str, args, opts) -> str:
    from hydra.utils import instantiate

    from ..checkpoint import read_checkpoint
    from ..config import compose_train_config
    from ..quant.deploy import export_deploy
    from ..quant.export import export_datamodule, load_for_export
    from ..quant.ort_runner import OrtModel
    from ..quant.pt2e import convert
    from ..quant.ptq import ptq_convert

    ckpts = dict(c.split("=", 1) for c in opts.deploy_ckpt)
    size = opts.deploy_size or DEFAULT_SIZE[task]
    overrides = [f"paths.data_dir={opts.deploy_data_dir}"] if opts.deploy_data_dir else []
    ckpt = ckpts.get(task)
    image_size = None
    if ckpt:
        image_size = (read_checkpoint(ckpt)["mnv2_tasks"].get("input") or {}).get("image_size")
    dm = export_datamodule(task, overrides, image_size)
    val_example = _images(dm, 2, train=False)[0][:2]
    calib = _images(dm, opts.deploy_calibration_images, train=True)
    if ckpt:
        _, net, prepared, _ = load_for_export(Path(ckpt), lambda: val_example)
        source = "QAT" if prepared is not None else "PTQ"
    else:
        net, prepared, source = _untrained_net(task, size), None, "PTQ"
        net.train()
        with torch.no_grad():  # BatchNorm statistics from real images, so the net depends on its input
            for b in calib[:4]:
                net.deploy_forward(torch.nn.functional.interpolate(b, size=(size, size)))
    net = net.eval().use_postprocess("eval")
    lat_example = torch.randn(2, 3, size, size)

    def resize(batches):
        return [torch.nn.functional.interpolate(b, size=(size, size), mode="bilinear", align_corners=False) for b in batches]

    out_dir = Path(opts.deploy_out or tempfile.mkdtemp(prefix=f"deploy_{task}_"))
    files: dict[str, Path] = {}
    files["ORT fp32"] = export_deploy(None, net, lat_example, out_dir / f"{task}.fp32.onnx")
    if prepared is not None and size == val_example.shape[-1]:
        q = convert(prepared)
    else:  # QAT graphs are captured at the training size: at another size, PTQ with the same quantizer
        q = ptq_convert(net, lat_example, resize(calib))
        source = "PTQ"
    files[f"ORT int8 (torchao {source})"] = export_deploy(q, net, lat_example, out_dir / f"{task}.int8.onnx")
    files["ORT int8 (ORT quantize_static)"] = _ort_static_ptq(files["ORT fp32"], out_dir / f"{task}.ortq.onnx", resize(calib))

    runners = {"PyTorch eager fp32": None, **{k: OrtModel(p, args.threads) for k, p in files.items()}}
    batches = args.batches or (1, 8)
    torch.set_num_threads(args.threads)
    rows = []
    for name, model in runners.items():
        lat = {}
        for b in batches:
            x = torch.randn(b, 3, size, size)
            if model is None:
                with torch.inference_mode():
                    lat[b] = _latency(lambda t: net(t), x, args)
            else:
                xn = x.numpy()
                lat[b] = _latency(lambda t: model.session.run(None, {model.input_name: xn}), x, args)
        metric = ""
        if ckpt and tuple(val_example.shape[-2:]) != (size, size):
            metric = f"n/a (files at {size}; metrics need --deploy-size {val_example.shape[-1]})"
        elif ckpt:
            cfg = compose_train_config([f"task={task}", *overrides])
            m = instantiate(cfg.model).evaluate_with(net if model is None else model, dm.val_dataloader(), progress=False)
            key = cfg.monitor.metric.split("/")[-1]  # the task's headline metric (top1, mAP, mIoU)
            metric = f"{key} {m[key]:.4f}" if key in m else ""
        mb = files[name].stat().st_size / 2**20 if name in files else sum(p.numel() * 4 for p in net.parameters()) / 2**20
        rows.append((name, lat, mb, metric))
    base = rows[1][1][batches[0]]
    lines = [f"{task} at {size}x{size}, {args.threads} threads, opset 20" + (f", checkpoint {ckpt}" if ckpt else ", untrained weights"),
             "", "| variant | " + " | ".join(f"batch {b} (ms)" for b in batches) + " | vs ORT fp32 (b1) | size (MB) | metric (embedded val) |",
             "|---|" + "---:|" * len(batches) + "---:|---:|---|"]
    for name, lat, mb, metric in rows:
        lines.append(f"| {name} | " + " | ".join(f"{lat[b]:.2f}" for b in batches) + f" | {base / lat[batches[0]]:.2f}x | {mb:.2f} | {metric} |")
    return "\n".join(lines)


def run(args) -> str:
    from .multitask import run_multitask

    tasks = args.deploy_task or ["classification"]
    return "\n\n".join(run_multitask(args) if t == "multitask" else bench_task(t, args, args) for t in tasks)


if __name__ == "__main__":
    p = timing_parser(__doc__)
    add_options(p)
    print(run(p.parse_args()))
