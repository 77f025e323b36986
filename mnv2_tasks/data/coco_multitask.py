"""COCO instances as boxes *and* semantic masks of the same images (``task=multitask``).

Every sample of ``CocoDetection`` (image, detection target, meta) plus ``"mask"``: the (H, W)
int64 semantic mask drawn from the same annotations' instance masks, in the detector's labels
(0 background, 1..K the categories in label order), 255 (ignored) for crowd regions and for
pixels claimed by two classes, as ``data=coco_seg`` draws them. The mask goes through the same
augmentation as the image and the boxes (SSD's zoom-out, IoU crop, flip, resize).

An annotation file whose non-crowd annotations have boxes but no ``segmentation`` is refused
with the file named (train the detector alone on it with ``task=detection``).
"""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from .coco import CocoDataModule, CocoDetection, detection_collate
from .coco_seg import draw_semantic_mask
from .images import DataError

__all__ = ["CocoMultiTask", "CocoMultiTaskDataModule", "multitask_collate"]


class CocoMultiTask(CocoDetection):
    """``CocoDetection`` with a semantic mask per image (see the module docstring)."""

    def __init__(self, ann_file, img_dir, transform=None, **kwargs) -> None:
        super().__init__(ann_file, img_dir, transform, **kwargs)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(self.ann_file))
        unmasked = [a for a in self.coco.dataset.get("annotations", [])
                    if not a.get("iscrowd", 0) and not a.get("segmentation") and a.get("image_id") in self.images]
        if unmasked:
            a = unmasked[0]
            raise DataError(
                f"{self.ann_file}: {len(unmasked)} annotations have a box but no 'segmentation' (e.g. annotation id "
                f"{a.get('id')} of image id {a.get('image_id')}); task=multitask needs instance masks to draw the "
                "segmentation targets. Add the masks, or train the detector alone with task=detection"
            )

    def semantic_mask(self, im: dict, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 in the detector's labels; 255 for crowds and for pixels two classes claim."""
        mask = draw_semantic_mask(self.coco, im["id"], self.cat_id_to_label)
        if mask.shape != tuple(shape):  # the image on disk has another size than the file says (on_bad=warn)
            mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return mask

    def __getitem__(self, idx: int) -> dict:
        image, boxes, labels, im = self.load(idx)
        sample = self.make_sample(image, boxes, labels, im, mask=self.semantic_mask(im, image.shape[:2]))
        sample["mask"] = torch.as_tensor(sample["mask"]).long()  # (H, W): class ids, 255 ignored
        return sample


def multitask_collate(samples: list[dict]) -> dict:
    """``detection_collate`` plus the stacked masks (N, H, W)."""
    return {**detection_collate(samples), "mask": torch.stack([s["mask"] for s in samples])}


class CocoMultiTaskDataModule(CocoDataModule):
    """``CocoDataModule`` whose samples also carry the semantic mask (``CocoMultiTask``)."""

    tasks = ("multitask",)  # the tasks this data serves (config_check names the right data config otherwise)

    collate_fn = staticmethod(multitask_collate)

    def _dataset(self, ann_file, img_dir, transform, cat_ids=None, data: dict | None = None) -> CocoMultiTask:
        return CocoMultiTask(ann_file, img_dir, transform, cat_ids=cat_ids, on_bad=self.on_bad, box_tolerance=self.box_tolerance,
                             data=data)

    def truth_of(self, sample: dict) -> dict:
        mask = sample["mask"].numpy().copy()
        mask[mask == 255] = 0
        return {**super().truth_of(sample), "mask": mask}

    @property
    def seg_class_names(self) -> list[str]:
        """Segmentation classes: the background, then the categories in label order."""
        return ["background", *self.class_names]
