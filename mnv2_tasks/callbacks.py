"""Lightning callbacks of the package that are not about quantization."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

__all__ = ["ValidationPictures", "SaveOnDataError", "TimeBreakdown"]


class TimeBreakdown(Callback):
    """Where a run's fitting time goes: the network step (forward, loss, backward, optimizer: from
    ``on_train_batch_start`` to ``on_train_batch_end``), waiting for the next batch (data loading),
    validation, and the rest (checkpoints, logging, epoch hooks). ``final_metrics`` gives seconds
    ``time_fit_s``, ``time_step_s``, ``time_data_s``, ``time_val_s`` and ``time_step_fraction`` (step /
    fit) for ``metrics.json``: the figure a faster input pipeline raises."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self.step = self.data = self.val = self.fit = 0.0
        self._t_fit = self._t_batch = self._t_last_end = self._t_val = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._t_fit = self._now()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t_last_end = self._now()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t_batch = self._now()
        if self._t_last_end is not None:
            self.data += self._t_batch - self._t_last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._t_last_end = self._now()
        self.step += self._t_last_end - self._t_batch

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:  # the sanity check runs before fitting starts
            self._t_val = self._now()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._t_val is not None:
            self.val += self._now() - self._t_val
            self._t_val = None
        self._t_last_end = None  # the wait after validation is not data loading

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._t_last_end = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self._t_fit is not None:
            self.fit = self._now() - self._t_fit

    def final_metrics(self) -> dict:
        if not self.fit:
            return {}
        return {"time_fit_s": round(self.fit, 1), "time_step_s": round(self.step, 1), "time_data_s": round(self.data, 1),
                "time_val_s": round(self.val, 1), "time_step_fraction": round(self.step / self.fit, 3)}


class SaveOnDataError(Callback):
    """A sample that fails while training (``data.on_bad=error``; e.g. a file changed on disk after the
    pre-flight check) stops the run with the error naming the file, after saving where the run was to
    ``checkpoints/<filename>``: resume from it with ``ckpt_path=`` once the file is fixed."""

    def __init__(self, dirpath: str, filename: str = "interrupted.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self._training = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from .data.images import DataError

        # only once training runs: a pre-flight error at setup has nothing to save
        if isinstance(exception, DataError) and self._training:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.path)
            log.error("bad data stopped the run at epoch %d, step %d; saved %s (resume with ckpt_path=%s once the data is fixed)",
                      trainer.current_epoch, trainer.global_step, self.path, self.path)


class ValidationPictures(Callback):
    """At the end of fitting, ``val_predictions.png`` in the run directory: a grid of the first ``num_images``
    validation images as the network sees them, each as its ground truth beside the prediction (boxes with class and
    score, masks blended, top classes written; "no box >= threshold" where none passes): the model shown to a person.

    Args:
        num_images: images in the grid.
        score_threshold: detection: boxes drawn from this score on.
        filename: written into the trainer's ``default_root_dir``.
    """

    def __init__(self, num_images: int = 16, score_threshold: float = 0.3, filename: str = "val_predictions.png") -> None:
        self.num_images, self.score_threshold, self.filename = num_images, score_threshold, filename

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        try:
            path = self.draw(pl_module, trainer.datamodule, Path(trainer.default_root_dir) / self.filename)
            log.info("validation pictures: %s", path)
        except Exception as e:  # noqa: BLE001 - pictures never cost the run its results
            log.warning("could not draw %s: %s", self.filename, e)

    def draw(self, pl_module, datamodule, out: Path) -> Path:
        from .models.results import frame_result_of
        from .visualize import grid, to_frame, truth_and_prediction

        spec = datamodule.input_spec()
        was_training = pl_module.training
        pl_module.eval()
        tiles = []
        try:
            for k in range(min(self.num_images, len(datamodule.val_set))):
                sample = datamodule.val_set[k]
                batch = datamodule.collate_fn([sample]) if datamodule.collate_fn else torch.utils.data.default_collate([sample])
                images = pl_module.prepare_batch(batch)["image"].to(pl_module.device)
                preds = pl_module.predictions(pl_module.raw_outputs(images), images)
                frame = to_frame(sample["image"], spec["mean"], spec["std"])
                hw = frame.shape[:2]
                pred = frame_result_of(pl_module.task_name)(preds, 0, hw, hw, spec["class_names"], spec["category_ids"])
                tiles.append(truth_and_prediction(frame, datamodule.truth_of(sample), pred, self.score_threshold))
        finally:
            pl_module.train(was_training)
        grid(tiles, cols=max(1, math.ceil(math.sqrt(len(tiles) / 2)))).save(out)
        return out
