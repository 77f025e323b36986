"""What every task's LightningModule shares: optimizer and LR schedule, backbone freezing,
pretrained loading, the validation loop around task-specific metric code, checkpoint metadata."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import lightning as L
import torch
from torch import nn

from ..models.pretrained import load_pretrained

__all__ = ["TaskModule", "WarmupSchedule", "check_num_classes"]


def check_num_classes(data_classes: int, net, source: str, note: str = "") -> None:
    """The one class-count check: the data's count must be the network's (``num_classes: ${data.num_classes}``)."""
    if data_classes != net.num_classes:
        raise ValueError(
            f"the data ({source}) has {data_classes} classes{note} but the model has num_classes={net.num_classes}; "
            f"set model.net.num_classes={data_classes} (the task configs interpolate ${{data.num_classes}})"
        )


class WarmupSchedule:
    """LR multiplier per optimizer step: linear warm-up, then ``cosine``, ``step``, ``poly`` or ``constant``.

    A callable object (not a closure) so that ``LambdaLR`` saves and restores it with the checkpoint.
    """

    def __init__(
        self,
        total_steps: int,
        warmup_steps: int = 0,
        name: str = "cosine",
        min_lr_ratio: float = 0.0,
        warmup_start_ratio: float = 0.01,
        step_size: int = 1,
        gamma: float = 0.1,
        power: float = 0.9,
    ) -> None:
        if name not in ("cosine", "step", "poly", "constant"):
            raise ValueError(f"scheduler name must be cosine, step, poly or constant, got {name!r}")
        self.total_steps, self.warmup_steps, self.name = max(1, total_steps), warmup_steps, name
        self.min_lr_ratio, self.warmup_start_ratio = min_lr_ratio, warmup_start_ratio
        self.step_size, self.gamma, self.power = max(1, step_size), gamma, power

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_ratio + (1 - self.warmup_start_ratio) * step / self.warmup_steps
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** ((step - self.warmup_steps) // self.step_size)
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.name == "poly":
            decay = (1 - t) ** self.power
        else:
            decay = 0.5 * (1 + math.cos(math.pi * t))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * decay


class TaskModule(L.LightningModule):
    """Base LightningModule. Subclasses implement ``model_step`` and the metric hooks.

    Args:
        net: the built network; it follows the model contract (``models/contract.py``), which is all
            this module and its subclasses ask of it.
        optimizer: a factory ``optimizer(params) -> torch.optim.Optimizer`` (Hydra ``_partial_: true``).
        scheduler: keyword arguments of ``WarmupSchedule`` plus ``warmup_epochs`` (converted to
            steps); ``None`` keeps the LR constant. Stepped every optimizer step.
        freeze_backbone: no gradients into the backbone, and its BatchNorm statistics frozen too.
        pretrained: path of a MobileNetV2 weights file (torchvision, timm or this package) loaded into the backbone.
        norm_weight_decay: weight decay for BatchNorm weights and biases (``None``: the optimizer's).
        channels_last: train and evaluate in the channels-last memory format (NHWC). Same numbers;
            on CPUs it speeds up the depthwise-separable convolutions (SSDLite's training step is
            ~1.5x faster, see BENCHMARKS.md), on GPUs it is what mixed precision wants.
    """

    @property
    def task_name(self) -> str:
        """The task, as the network declares it (``TaskNet.task``): declared once, by the network."""
        return self.net.task

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable], torch.optim.Optimizer],
        scheduler: dict | None = None,
        freeze_backbone: bool = False,
        pretrained: str | None = None,
        norm_weight_decay: float | None = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_kwargs = dict(scheduler) if scheduler else None
        self.freeze_backbone = freeze_backbone
        self.norm_weight_decay = norm_weight_decay
        self.net_spec: dict | None = None  # the Hydra node that builds `net`; set by train(cfg)
        self.input_spec: dict = {}  # what inference needs, when no data module gives it (TaskDataModule.input_spec)
        self._final_metrics: dict | None = None
        self.skipped_samples = 0  # samples that failed to load while training or validating (data.on_bad=warn)
        self.pretrained_report = None
        if pretrained:
            self.load_pretrained_backbone(pretrained)
        if freeze_backbone:
            for m in net.backbone_parts():
                m.requires_grad_(False)
            self.train()
        self.channels_last = channels_last
        if channels_last:
            net.to(memory_format=torch.channels_last)

    # ---- the step: subclasses -------------------------------------------------------------
    def model_step(self, batch: dict, stage: str) -> tuple[torch.Tensor | dict | None, Any]:
        """Return (loss or dict of named losses, predictions as ``net`` returns them in eval mode)."""
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def update_metrics(self, preds: Any, batch: dict) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> dict:
        """Flat metrics of everything seen since ``reset_metrics`` (synchronised across ranks)."""
        raise NotImplementedError

    # ---- Lightning hooks ------------------------------------------------------------------
    classes_note = ""  # e.g. " (categories + background)" where the count includes a background class

    def load_pretrained_backbone(self, path: str):
        """Load a MobileNetV2 weights file into the network's declared ``pretrained_target()``."""
        self.pretrained_report = load_pretrained(self.net.pretrained_target(), path)
        return self.pretrained_report

    def set_category_ids(self, category_ids: list[int]) -> None:
        """The data set's id of each class, where evaluation writes them (detection); other tasks have none."""
        raise NotImplementedError(f"{self.task_name} evaluation has no category ids")

    def checked_datamodule(self):
        """The trainer's data module (or None), after checking its ``num_classes`` against the network's."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None:
            check_num_classes(dm.num_classes, self.net, str(dm.root), self.classes_note)
        return dm

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_backbone:
            for m in self.net.backbone_parts():
                m.eval()  # frozen BatchNorm statistics
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's own mode around validation, but does not call
        # train() at fit start: enforce the frozen backbone's eval mode here too.
        self.train()

    def forward(self, images: torch.Tensor):
        return self.net(images)

    def raw_outputs(self, images: torch.Tensor) -> dict:
        """The network's raw outputs (``deploy_forward``): the training outputs and the predictions both read them."""
        return self.net.deploy_forward(images)

    def predictions(self, raw: dict, images: torch.Tensor):
        """What the network returns in eval mode, from its raw outputs."""
        return self.net.postprocess(raw, images.shape[-2:])

    def prepare_batch(self, batch: Any) -> Any:
        """The batch as the network wants it (channels-last images when ``channels_last``)."""
        if self.channels_last and isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) and batch["image"].dim() == 4:
            batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
        return batch

    def _log_losses(self, loss, stage: str, batch_size: int) -> torch.Tensor:
        if isinstance(loss, dict):
            for k, v in loss.items():
                self.log(f"{stage}/{k}", v.detach(), batch_size=batch_size, sync_dist=stage != "train")
            loss = sum(loss.values())
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, batch_size=batch_size, sync_dist=stage != "train")
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.skipped_samples += int(batch.get("skipped", 0))  # bad samples left out while loading (data.on_bad=warn)
        batch = self.prepare_batch(batch)
        loss, _ = self.model_step(batch, "train")
        return self._log_losses(loss, "train", batch["image"].shape[0])

    def on_validation_epoch_start(self) -> None:
        self.reset_metrics()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.skipped_samples += int(batch.get("skipped", 0))
        batch = self.prepare_batch(batch)
        loss, preds = self.model_step(batch, "val")
        if loss is not None:
            self._log_losses(loss, "val", batch["image"].shape[0])
        self.update_metrics(preds, batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self.compute_metrics()
        self._final_metrics = metrics
        scalars = {f"val/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        # values are already reduced over ranks by compute_metrics
        self.log_dict(scalars, prog_bar=False, sync_dist=False, rank_zero_only=False)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def final_metrics(self) -> dict | None:
        """The metrics of the last completed validation (what ``train(cfg)`` writes to metrics.json)."""
        return self._final_metrics

    @torch.no_grad()
    def evaluate_with(self, fn: Callable[[torch.Tensor], Any], dataloader, progress: bool = True) -> dict:
        """Run ``fn(images)`` (returning what ``net`` returns in eval mode) over ``dataloader`` through this task's metrics."""
        from tqdm import tqdm

        self.reset_metrics()
        for batch in tqdm(dataloader, desc="evaluate", disable=not progress, leave=False):
            self.update_metrics(fn(batch["image"]), batch)
        return self.compute_metrics()

    # ---- optimisation ---------------------------------------------------------------------
    def _param_groups(self) -> list[dict]:
        params = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        if self.norm_weight_decay is None:
            return [{"params": [p for _, p in params]}]
        decay = [p for _, p in params if p.ndim > 1]
        no_decay = [p for _, p in params if p.ndim <= 1]  # BatchNorm weights/biases and conv/linear biases
        return [{"params": decay}, {"params": no_decay, "weight_decay": self.norm_weight_decay}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([g for g in self._param_groups() if g["params"]])
        if not self.scheduler_kwargs:
            return optimizer
        kwargs = dict(self.scheduler_kwargs)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup_epochs = kwargs.pop("warmup_epochs", 0)
        kwargs.setdefault("warmup_steps", int(round(warmup_epochs * steps_per_epoch)))
        if "step_epochs" in kwargs:  # step decay given in epochs
            kwargs["step_size"] = int(kwargs.pop("step_epochs") * steps_per_epoch)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(total_steps=total, **kwargs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from ..version import __version__

        dm = self.trainer.datamodule if self._trainer is not None else None
        from ..checkpoint import input_spec_of

        inputs = input_spec_of({**self.input_spec, **(dm.input_spec() if dm is not None else {})})  # size as [H, W]
        # the memory format evaluation ran in: inference runs in it too, and so computes the same floats
        inputs["channels_last"] = bool(self.channels_last)
        # update, not replace: callbacks (QAT) may have added entries before this hook runs
        checkpoint.setdefault("mnv2_tasks", {}).update(
            {"task": self.task_name, "net": self.net_spec, "input": inputs, "version": __version__}
        )
