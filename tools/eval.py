"""Evaluate a model file on a validation set with the task's own metric code (``mnv2-eval`` once installed).

    python tools/eval.py ckpt=outputs/.../checkpoints/last.ckpt    # the run's task, network and data, as recorded
    python tools/eval.py ckpt=last.ckpt data.root=/data/moved       # overrides win
    python tools/eval.py task=classification data=imagefolder data.root=/data/imagenet \
        model.net.width_mult=1.0 ckpt=mobilenet_v2-b0353104.pth
    python tools/eval.py task=detection ckpt=model.int8.onnx     # runs in ONNX Runtime

Writes ``eval_metrics.json`` to the run directory (``paths.output_dir``); see ``mnv2_tasks.evaluate``.
"""

from mnv2_tasks.cli import eval_main

if __name__ == "__main__":
    eval_main()
