"""Deployment table per task, in the spirit of ``yolo benchmark``: every runtime and precision side by side.

    python tools/benchmark.py --task deploy                               # classification at 224, untrained weights
    python tools/benchmark.py --task deploy --formats all --deploy-task detection --json rows.json
    python tools/benchmark.py --task deploy --formats all --deploy-ckpt detection=<QAT run>/checkpoints/last.ckpt
    python -m mnv2_tasks.benchmarks.deploy --deploy-task classification   # standalone

Rows: PyTorch eager fp32; ONNX Runtime fp32, int8 (the package's torchao PT2E graph: QAT or PTQ)
and int8 from ORT's own ``quantize_static`` (QDQ, U8S8, per-channel) as the baseline; with
``--formats`` also OpenVINO fp32 (true f32: ``INFERENCE_PRECISION_HINT=f32``) / int8 (IR),
ExecuTorch fp32 / int8 (XNNPACK delegate) and the TensorRT-ready symmetric int8 file (run in
ONNX Runtime here: there is no GPU). Each int8 file is in the scheme its runtime takes
(``quant/targets.py``): the QAT checkpoint's graph where its scheme suits, else PTQ with the
package quantizer in that scheme, calibrated on the same embedded images.

Latency is end to end (a detector's NMS included: in the graph for ORT and OpenVINO, on the
decoded outputs for ExecuTorch), p50 = median of the rounds' medians and p99 over every run,
at batch 1 and 8 with ``--threads`` threads, in alternating rounds in this one process. Sizes
are the files'. With a checkpoint, each row's metric on the embedded validation set through the
task's own metric code; without, the network is untrained (BatchNorm statistics estimated on
embedded images) and the metric column is empty. ``--json FILE`` writes the rows as objects with
keys ``task, runtime, precision, batch, p50_ms, p99_ms, round_p50_ms, vs_ref (median, _min, _max over rounds of
each round's speed ratio to ORT fp32), size_mb, metric``. ``--profile`` adds the
slowest ops of the fastest int8 runtime (OpenVINO's performance counters or ORT's profiler).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..models.contract import warm_batchnorm
from ..quant.model_file import ExportedModel, file_bytes
from .common import cpu_int8_flags, times_ms, timing_parser

# the paper's networks, untrained, where no checkpoint is given: (latency input size, overrides of the task's config)
PAPER_NETS = {
    "classification": (224, ["model.net.width_mult=1.0", "model.net.num_classes=1000"]),   # ImageNet
    "detection": (320, ["model.net.width_mult=1.0", "model.net.num_classes=81", "det_head=paper"]),  # COCO
    "segmentation": (512, ["model.net.width_mult=1.0", "model.net.num_classes=21", "model.net.output_stride=16",
                           "model.net.head_chs=256"]),  # PASCAL VOC
}
DEFAULT_SIZE = {task: size for task, (size, _) in PAPER_NETS.items()}


def add_options(p: argparse.ArgumentParser) -> None:
    """The ``--deploy-*`` options (``--task deploy``)."""
    g = p.add_argument_group("deploy (--task deploy)")
    g.add_argument("--deploy-task", action="append", choices=[*DEFAULT_SIZE, "multitask"],
                   help="repeatable; default: classification; multitask: the one-trunk graph against the two single-task graphs")
    g.add_argument("--deploy-ckpt", action="append", default=[], help="task=checkpoint (float or QAT), repeatable")
    g.add_argument("--deploy-size", type=int, default=None, help="latency input size (default per task)")
    g.add_argument("--deploy-calibration-images", type=int, default=32)
    g.add_argument("--deploy-data-dir", default=None, help="embedded data root (paths.data_dir)")
    g.add_argument("--deploy-out", default=None, help="keep the exported files here")
    from ..quant.targets import TARGETS

    g.add_argument("--formats", default="onnx", help=f"runtimes besides PyTorch, comma-separated: {', '.join(TARGETS)}, "
                   "or all (ORT fp32 is always measured: the ratios' reference)")
    g.add_argument("--deploy-postprocess", default="eval",
                   help="the network's post-processing preset in every file and row: eval (what mAP is measured with: "
                        "score 0.001, 100 boxes) or, for a detector, deploy (what a robot runs: conf/model/ssdlite.yaml)")
    g.add_argument("--json", default=None, help="also write the rows to this JSON file")
    g.add_argument("--profile", action="store_true", help="per-op profile of the fastest int8 runtime (top 12 ops)")


def _untrained_net(task: str, size: int):
    """The paper's network of ``task``, built from the task's own config (``PAPER_NETS`` says what differs)."""
    from hydra.utils import instantiate

    from ..config import compose_train_config

    cfg = compose_train_config([f"task={task}", "pretrain=none", *PAPER_NETS[task][1]])
    if "size" in cfg.model.net:
        cfg.model.net.size = size
    return instantiate(cfg.model.net)


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
    import onnx

    src, out = onnx.load(str(fp32_path)), onnx.load(str(out_path))
    if not out.metadata_props:  # the task and output format, so the package's reader reads it back
        for p in src.metadata_props:
            out.metadata_props.add(key=p.key, value=p.value if p.key != "precision" else "int8")
        onnx.save_model(out, str(out_path))
    return out_path


def _size_mb(path: Path) -> float:
    return file_bytes(path) / 2**20


REFERENCE = "onnx"  # the target whose fp32 file every ratio is measured against (ONNX Runtime fp32)
ORT_QUANTIZER = "ONNX Runtime (ORT quantize_static)"


def _variants(formats: list[str]) -> list[tuple[str, str, str | None]]:
    """(runtime, precision, target) rows in table order, from the target records; target None: PyTorch or ORT's own quantizer."""
    from ..quant.targets import TARGETS

    rows: list[tuple[str, str, str | None]] = [("PyTorch eager", "fp32", None)]
    for name in [REFERENCE, *[t for t in formats if t != REFERENCE]]:
        spec = TARGETS[name]
        if not spec.runs_here():  # Core ML off macOS: nothing to time
            continue
        rows += [(spec.display, p, name) for p in spec.precisions]
        if name == REFERENCE:
            rows.append((ORT_QUANTIZER, "int8", None))
    return rows


def _profile(model, x: torch.Tensor, top: int = 12) -> str:
    """The slowest ops of an exported model on ``x`` (20 runs, its runtime's profiler)."""
    totals = model.profile(x.numpy(), 20)
    total = sum(totals.values()) or 1.0
    lines = [f"per-op profile of {model.target.display} int8 ({model.path.name}), batch {x.shape[0]}, ms per run:", "",
             "| op | ms | share |", "|---|---:|---:|"]
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {name} | {ms:.3f} | {ms / total:.0%} |")
    return "\n".join(lines)


def _profiles(model) -> bool:
    """Whether ``model``'s runtime has a per-op profiler (its runner overrides ``ExportedModel.profile``)."""
    return type(model).profile is not ExportedModel.profile


def bench_task(task: str, args, opts) -> tuple[str, list[dict]]:
    from hydra.utils import instantiate

    from ..checkpoint import ModelRecord
    from ..config import compose_train_config
    from ..quant.export import export_datamodule, load_for_export
    from ..quant.runners import open_model
    from ..quant.pt2e import convert
    from ..quant.ptq import ptq_convert
    from ..quant.targets import TARGETS, check_targets, scheme_for, write_targets

    formats = check_targets(getattr(opts, "formats", "onnx") or "onnx")
    ckpts = dict(c.split("=", 1) for c in opts.deploy_ckpt)
    size = opts.deploy_size or DEFAULT_SIZE[task]
    overrides = [f"paths.data_dir={opts.deploy_data_dir}"] if opts.deploy_data_dir else []
    ckpt = ckpts.get(task)
    record = ModelRecord.read(ckpt) if ckpt else None
    qat_scheme = (record.quant or {}).get("scheme") if record else None
    dm = export_datamodule(task, overrides, record.input.get("image_size") if record else None)
    val_example = _images(dm, 2, train=False)[0][:2]
    calib = _images(dm, opts.deploy_calibration_images, train=True)
    if ckpt:
        _, net, prepared, _ = load_for_export(record, lambda: val_example)
    else:
        net, prepared = _untrained_net(task, size), None
        warm_batchnorm(net, [torch.nn.functional.interpolate(b, size=(size, size)) for b in calib[:4]])
    net = net.eval().use_postprocess(getattr(opts, "deploy_postprocess", "eval"))
    lat_example = torch.randn(2, 3, size, size)
    resized = [torch.nn.functional.interpolate(b, size=(size, size), mode="bilinear", align_corners=False) for b in calib]
    cores: dict[str, tuple] = {}

    def int8_core(target: str):
        """The QAT graph where its scheme suits the target (and the size is the trained one), else PTQ."""
        use_qat = prepared is not None and qat_scheme in TARGETS[target].schemes and size == val_example.shape[-1]
        scheme = qat_scheme if use_qat else scheme_for([target])  # the target's own fastest scheme
        key = f"{'qat' if use_qat else 'ptq'}_{scheme}"
        if key not in cores:
            cores[key] = (convert(prepared) if use_qat else ptq_convert(net, lat_example, resized, scheme), key)
        return cores[key]

    out_dir = Path(opts.deploy_out or tempfile.mkdtemp(prefix=f"deploy_{task}_"))
    files: dict[tuple[str, str], Path] = {}
    sources: dict[tuple[str, str], str] = {}
    refused = net.unsupported_targets()  # targets the network declares no converter takes (the log says why)
    variants = [v for v in _variants(formats) if v[2] not in refused]
    needed = sorted({t for _, _, t in variants if t}, key=list(TARGETS).index)
    fp32 = write_targets(needed, None, net, lat_example, out_dir, "fp32", stem=task)  # targets with an fp32 file
    for runtime, precision, target in variants:
        if precision == "fp32" and target:
            files[(runtime, precision)] = fp32[target]
        elif precision == "int8" and target:
            core, key = int8_core(target)
            files[(runtime, precision)] = write_targets([target], core, net, lat_example, out_dir, "int8", stem=f"{task}_{key}")[target]
            sources[(runtime, precision)] = key.replace("_", " ")
    ortq = (ORT_QUANTIZER, "int8")
    files[ortq] = _ort_static_ptq(fp32[REFERENCE], out_dir / f"{task}.ortq.onnx", resized)
    sources[ortq] = "ptq u8"

    models = {k: open_model(p, args.threads) for k, p in files.items()}
    batches = args.batches or (1, 8)
    torch.set_num_threads(args.threads)
    inputs = {b: torch.randn(b, 3, size, size) for b in batches}
    times: dict[tuple, list[list[float]]] = {}
    order = [(r, p) for r, p, _ in variants]
    for _ in range(args.rounds):  # alternating rounds: every model once per round
        for key in order:
            model = models.get(key)
            for b in batches:
                x = inputs[b]
                if model is None:
                    def fn(x=x):
                        with torch.inference_mode():
                            return net(x)
                else:
                    def fn(x=x, model=model):
                        return model(x)
                times.setdefault((*key, b), []).append(times_ms(fn, args.warmup, args.repeats))
    rows: list[dict] = []
    metric_key = compose_train_config([f"task={task}", *overrides]).monitor.metric.split("/")[-1]
    module = instantiate(compose_train_config([f"task={task}", *overrides]).model) if ckpt else None
    for key in order:
        metric = None
        if ckpt and tuple(val_example.shape[-2:]) == (size, size):
            model = models.get(key)
            m = module.evaluate_with(net if model is None else model, dm.val_dataloader(), progress=False)
            metric = float(m.get(metric_key, float("nan")))
        size_mb = _size_mb(files[key]) if key in files else sum(p.numel() * 4 for p in net.parameters()) / 2**20
        for b in batches:
            runs = times[(*key, b)]
            per_round = [statistics.median(r) for r in runs]
            # the speed against ORT fp32 in each round (the rounds alternate, so each ratio compares runs made side by
            # side): its spread over rounds says whether a difference between two rows is more than noise
            ref_rounds = [statistics.median(r) for r in times[(TARGETS[REFERENCE].display, "fp32", b)]]
            ratios = [a / t for a, t in zip(ref_rounds, per_round)]
            rows.append({"task": task, "runtime": key[0], "precision": key[1], "batch": b,
                         "p50_ms": round(statistics.median(per_round), 3),
                         "p99_ms": round(float(np.percentile([t for r in runs for t in r], 99)), 3),
                         "round_p50_ms": [round(v, 3) for v in per_round],
                         "vs_ref": round(statistics.median(ratios), 3), "vs_ref_min": round(min(ratios), 3),
                         "vs_ref_max": round(max(ratios), 3),
                         "size_mb": round(size_mb, 3), "metric": metric, "source": sources.get(key, "")})
    head = (f"{task} at {size}x{size}, {args.threads} threads, CPU int8 path: {cpu_int8_flags()}, "
            f"post-processing {getattr(opts, 'deploy_postprocess', 'eval')}"
            + (f", checkpoint {ckpt}" if ckpt else ", untrained weights"))
    if ckpt and tuple(val_example.shape[-2:]) != (size, size):
        head += f" (metrics need --deploy-size {val_example.shape[-1]}, the trained size)"
    lines = [head + f"; vs ORT fp32: the median over {args.rounds} alternating rounds of each round's speed ratio "
             "[lowest, highest]", "",
             "| runtime | precision | int8 from | " + " | ".join(f"b{b} p50 / p99 (ms)" for b in batches)
             + f" | vs ORT fp32 (b{batches[0]}) | size (MB) | " + (metric_key if ckpt else "metric") + " |",
             "|---|---|---|" + "---:|" * len(batches) + "---:|---:|---:|"]
    for key in order:
        rs = {r["batch"]: r for r in rows if (r["runtime"], r["precision"]) == key}
        r0 = rs[batches[0]]
        lines.append(f"| {key[0]} | {key[1]} | {r0['source']} | " + " | ".join(f"{rs[b]['p50_ms']:.2f} / {rs[b]['p99_ms']:.2f}" for b in batches)
                     + f" | {r0['vs_ref']:.2f}x [{r0['vs_ref_min']:.2f}, {r0['vs_ref_max']:.2f}] | {r0['size_mb']:.2f} | "
                     + (f"{r0['metric']:.4f}" if r0["metric"] is not None else "") + " |")
    if getattr(opts, "profile", False):
        int8 = [r for r in rows if r["precision"] == "int8" and r["batch"] == batches[0] and _profiles(models[(r["runtime"], "int8")])]
        best = min(int8, key=lambda r: r["p50_ms"])
        lines += ["", _profile(models[(best["runtime"], "int8")], inputs[batches[0]])]
    return "\n".join(lines), rows


def run(args) -> str:
    from .multitask import run_multitask

    tasks = args.deploy_task or ["classification"]
    parts, rows = [], []
    for t in tasks:
        if t == "multitask":
            parts.append(run_multitask(args))
            continue
        text, r = bench_task(t, args, args)
        parts.append(text)
        rows += r
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return "\n\n".join(parts)


if __name__ == "__main__":
    p = timing_parser(__doc__)
    add_options(p)
    print(run(p.parse_args()))
