"""Train a task: ``python train.py task=detection`` (``mnv2-train`` once installed; see conf/train.yaml)."""

from mnv2_tasks.cli import train_main

if __name__ == "__main__":
    train_main()
