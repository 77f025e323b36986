"""Export a checkpoint of this package to ONNX (opset 20, dynamic batch), float or int8, and check it in ONNX Runtime.

    python tools/export.py outputs/classification/.../checkpoints/last.ckpt                  # fp32 and int8
    python tools/export.py last.ckpt --precision int8 --calibration-images 128                # PTQ on the fly
    python tools/export.py qat_run/checkpoints/last.ckpt --precision int8                    # QAT checkpoint
    python tools/export.py det.ckpt --outputs raw           # decoded boxes + per-class scores, no NMS
    python tools/export.py seg.ckpt --outputs argmax        # (N, H, W) int64 masks instead of logits
    python tools/export.py last.ckpt data.root=/data/coco   # data overrides: where the val/calibration images are

The task, network and input size come from the checkpoint; its task's data config (plus any
``key=value`` overrides) gives the validation images the export is checked on and, for an
int8 export of a float checkpoint, the training images PTQ calibrates on. Every file is run
in ONNX Runtime at batch 1 and batch ``--check-images`` against PyTorch (fp32: the float
network; int8: the converted PT2E graph in PyTorch) and the differences are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnv2_tasks.checkpoint import build_net, check_compatible, read_checkpoint  # noqa: E402
from mnv2_tasks.models.pretrained import CheckpointError  # noqa: E402
from mnv2_tasks.quant.checkpoints import quant_info_of  # noqa: E402
from mnv2_tasks.pretrain import compose_train_config  # noqa: E402
from mnv2_tasks.quant.deploy import OUTPUTS, DeployModule, export_deploy  # noqa: E402
from mnv2_tasks.quant.onnx_export import OPSET  # noqa: E402
from mnv2_tasks.quant.ort_runner import OrtModel  # noqa: E402
from mnv2_tasks.quant.parity import compare_outputs, format_report  # noqa: E402
from mnv2_tasks.quant.pt2e import convert, deploy_view, prepare  # noqa: E402
from mnv2_tasks.quant.ptq import calibration_batches, ptq_convert  # noqa: E402


def _compose(task: str, overrides: list[str]):
    return compose_train_config([f"task={task}", *overrides])


def _datamodule(task: str, overrides: list[str], image_size):
    from hydra.utils import instantiate
    from omegaconf import open_dict

    cfg = _compose(task, overrides)
    user_keys = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    if image_size is not None and "data.image_size" not in user_keys and "image_size" in cfg.data:
        with open_dict(cfg):
            cfg.data.image_size = image_size  # validate at the size the network was trained at
    with open_dict(cfg):
        cfg.data.num_workers = 0
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm


def load_for_export(ckpt_path: Path, example_loader=None, task: str | None = None, net_overrides: dict | None = None):
    """(task, float network, prepared QAT graph or None, checkpoint metadata) from a checkpoint of this package."""
    ckpt = read_checkpoint(ckpt_path)
    meta = ckpt["mnv2_tasks"]
    if task is not None or net_overrides:
        # the user named a task / network configuration: it must be the checkpoint's
        spec = {**(meta.get("net") or {}), **(net_overrides or {})}
        check_compatible(ckpt_path, task or meta.get("task"), spec)
    if not meta.get("net"):
        raise CheckpointError(f"{ckpt_path}: the checkpoint does not record how its network was built ('mnv2_tasks.net')")
    float_net = build_net(meta["net"]).eval()
    qinfo = quant_info_of(ckpt)
    state = ckpt["state_dict"]
    if qinfo is None:
        own = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        try:
            float_net.load_state_dict(own)
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt_path}: weights do not fit the recorded network: {str(e)[:400]}") from None
        return meta.get("task"), float_net, None, meta
    # QAT checkpoint: the float weights sit in the captured graph under their original names
    prefix = "net.graph.net."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, _ = float_net.load_state_dict(own, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{ckpt_path}: QAT checkpoint lacks float weights {missing[:5]}; was it written by QATCallback?")
    if example_loader is None:
        raise ValueError("a QAT checkpoint needs example images to rebuild its graph")
    example = example_loader()
    prepared = prepare(float_net, example, qat=True)
    graph_state = {k[len("net.graph."):]: v for k, v in state.items() if k.startswith("net.graph.")}
    try:
        prepared.load_state_dict(graph_state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ckpt_path}: the QAT graph rebuilt here does not match the checkpoint's ({str(e)[:300]}); "
            f"export with the torch / torchao versions it was trained with ({qinfo.get('torch')})"
        ) from None
    return meta.get("task"), float_net, prepared, meta


def run(args: argparse.Namespace) -> dict:
    ckpt_path = Path(args.ckpt)
    if ckpt_path.suffix == ".onnx":
        raise SystemExit(f"{ckpt_path}: already an ONNX file; export takes a training checkpoint (.ckpt)")
    meta0 = read_checkpoint(ckpt_path)["mnv2_tasks"]
    task = meta0.get("task")
    image_size = (meta0.get("input") or {}).get("image_size")
    cfg, dm = _datamodule(task if args.task is None else args.task, args.overrides, image_size)
    net_overrides = {o.split("=", 1)[0][len("model.net."):]: _yaml_value(o.split("=", 1)[1])
                     for o in args.overrides if o.startswith("model.net.")}

    val_images = torch.cat([b["image"] for b in _take(dm.val_dataloader(), args.check_images)])[: args.check_images]
    task, float_net, prepared, meta = load_for_export(ckpt_path, lambda: val_images[:2], args.task, net_overrides)
    if args.postprocess and hasattr(float_net, "use_postprocess"):
        float_net.use_postprocess(args.postprocess)
    view = deploy_view(float_net).eval()
    outputs = args.outputs or OUTPUTS[view.kind][0]
    if outputs not in OUTPUTS[view.kind]:
        raise SystemExit(f"--outputs {outputs} is not available for {task}; choose one of {OUTPUTS[view.kind]}")
    out_dir = Path(args.out_dir) if args.out_dir else ckpt_path.parent
    stem = ckpt_path.stem
    precisions = ["fp32", "int8"] if args.precision == "both" else [args.precision]
    example = val_images[:2]
    report: dict = {"ckpt": str(ckpt_path), "task": task, "opset": args.opset, "outputs": outputs,
                    "image_size": list(example.shape[-2:]), "files": {}}
    for precision in precisions:
        if precision == "fp32":
            core = view
        elif prepared is not None:
            core = convert(prepared)
            report["int8_source"] = "qat"
        else:
            batches = calibration_batches(dm.train_dataloader(), args.calibration_images)
            core = ptq_convert(float_net, example, batches)
            report["int8_source"] = f"ptq ({sum(b.shape[0] for b in batches)} calibration images)"
        path = out_dir / f"{stem}.{precision}.onnx"
        export_deploy(core, view.kind, example, path, outputs=outputs, float_net=float_net, opset=args.opset,
                      metadata={"task": task, "precision": precision, "source": ckpt_path.name})
        ort_model = OrtModel(path, args.threads)
        reference = DeployModule(core, view.kind, outputs, float_net).eval()
        checks = {f"batch {n}": compare_outputs(reference, ort_model, val_images[:n]) for n in sorted({1, len(val_images)})}
        what = "float network" if precision == "fp32" else "converted int8 graph in PyTorch"
        print(f"== {path} ({path.stat().st_size / 2**20:.2f} MB, opset {args.opset}, dynamic batch, input {list(example.shape[1:])})")
        for name, rep in checks.items():
            print(format_report(f"ONNX Runtime vs {what}, {name}", rep))
        report["files"][precision] = {"path": str(path), "bytes": path.stat().st_size, "checks": checks}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def _take(loader, n: int):
    seen = 0
    for batch in loader:
        yield batch
        seen += batch["image"].shape[0]
        if seen >= n:
            return


def _yaml_value(s: str):
    import yaml

    return yaml.safe_load(s)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="training checkpoint (.ckpt) of this package: float or QAT")
    p.add_argument("--precision", choices=["fp32", "int8", "both"], default="both")
    p.add_argument("--outputs", default=None, help="classification: logits; detection: nms (default) or raw; segmentation: logits (default) or argmax")
    p.add_argument("--postprocess", choices=["eval", "deploy"], default=None,
                   help="detection: the NMS preset baked into the graph (default: the checkpoint's, 'eval')")
    p.add_argument("--out-dir", default=None, help="default: next to the checkpoint (<ckpt stem>.<precision>.onnx)")
    p.add_argument("--calibration-images", type=int, default=64, help="PTQ (int8 from a float checkpoint)")
    p.add_argument("--check-images", type=int, default=8, help="validation images the ORT-vs-PyTorch check runs on")
    p.add_argument("--task", default=None, help="assert the checkpoint's task (error if it differs)")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the report to this file")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the task's config: data.root=..., paths.data_dir=...")
    return p.parse_intermixed_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
