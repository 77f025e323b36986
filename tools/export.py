"""Export a checkpoint to ONNX, float or int8, checked in ONNX Runtime (``mnv2-export`` once installed; ``--help``)."""

from mnv2_tasks.cli import export_main

if __name__ == "__main__":
    export_main()
