"""Train a task: ``python train.py task=detection`` (see conf/train.yaml for every option)."""

import hydra
from omegaconf import DictConfig

from mnv2_tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # the value Hydra's sweepers optimise, if asked: optimized_metric=top1
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    main()
