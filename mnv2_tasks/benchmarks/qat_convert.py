"""What converting a QAT graph costs (``pt2e.convert``), with torchao's conv + batch-norm patterns exported during the
call (an empty cache: what ``convert_pt2e`` does on every call without ``quant/pattern_cache.py``) and taken from the
process's cache; checks that both give the same outputs. Prints a markdown table.

    python -m mnv2_tasks.benchmarks.qat_convert [--task multitask] [--width 0.35] [--size 64] [--blocks tiny|paper]
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> str:
    from hydra.utils import instantiate

    from ..config import compose_train_config
    from ..quant import pattern_cache
    from ..quant.pt2e import convert, prepare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="multitask", choices=["classification", "detection", "segmentation", "multitask"])
    p.add_argument("--width", type=float, default=0.35)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--blocks", default="tiny", choices=["tiny", "paper"], help="conf/debug/blocks/<name>.yaml")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = compose_train_config([f"debug=tiny_{args.task}", f"debug/blocks@model.net={args.blocks}",
                                f"model.net.width_mult={args.width}"])
    net = instantiate(cfg.model.net)
    x = torch.randn(2, 3, args.size, args.size)
    prepared = prepare(net, x, qat=True, scheme="u8")
    prepared(x)  # the observers see a batch
    rows, outs = [], {}
    pattern_cache.clear()
    for name in ("patterns exported (an empty cache, as torchao alone on every call)", "patterns from the cache"):
        t0 = time.perf_counter()
        converted = convert(prepared)
        rows.append((name, time.perf_counter() - t0))
        with torch.no_grad():
            outs[name] = converted(x)
    ref = next(iter(outs.values()))
    same = all(torch.equal(o[k], ref[k]) for o in outs.values() for k in ref)
    lines = [f"QAT convert, {args.task}, width {args.width}, {args.blocks} table, {args.size} px, "
             f"{args.threads} thread(s); the same outputs to the bit: {same}", "",
             "| conversion | seconds |", "|---|---:|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in rows]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
