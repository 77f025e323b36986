"""Segmentation data: VOC layout and COCO -> semantic masks on the embedded set, the mask pipeline, bad input."""

from __future__ import annotations

import shutil

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from mnv2_tasks.data.coco_seg import COCO_TO_VOC, COCOSegDataModule, COCOSegmentation
from mnv2_tasks.data.images import DataError
from mnv2_tasks.data.seg_transforms import check_mask_interpolation, seg_collate, seg_compose, segmentation_train
from mnv2_tasks.data.shapes import VOC_PALETTE
from mnv2_tasks.data.voc import VOCDataModule, VOCSegmentation


def test_voc_samples_and_batches(shapes_root):
    dm = VOCDataModule(str(shapes_root / "voc"), num_classes=5, crop_size=64, batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["target"].shape == (4, 64, 64) and batch["target"].dtype == torch.int64
    assert set(batch["target"].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    val = next(iter(dm.val_dataloader()))
    # validation at full resolution
    assert val["image"].shape[-2:] == (96, 96) and val["target"].shape[-2:] == (96, 96)
    assert val["meta"][0]["path"].endswith(".jpg")
    # the same mask as on disk
    mask = np.array(Image.open(val["meta"][0]["mask_path"]))
    assert (val["target"][0].numpy() == mask).all()


def test_mask_pipeline_never_invents_class_ids(shapes_root):
    ds = VOCSegmentation(shapes_root / "voc", "train", 5)
    tf = seg_compose(segmentation_train(64, scale=(0.3, 2.5)))
    rng_seen = set()
    for i in range(len(ds)):
        image, mask = ds.load(i)
        allowed = set(np.unique(mask).tolist()) | {255}
        for _ in range(3):
            out = tf(image=image, mask=mask)["mask"]
            values = set(out.unique().tolist())
            assert values <= allowed, f"{ds.masks[i]}: pipeline produced {values - allowed}"
            rng_seen |= values
    assert 255 in rng_seen  # padding after down-scaling is ignore, not background


def test_nearest_only_on_a_two_class_checkerboard():
    # classes 1 and 3 alternate: any blending would create 2 (or 0)
    mask = (np.indices((40, 40)).sum(0) % 2 * 2 + 1).astype(np.uint8)
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    tf = seg_compose(segmentation_train(32, scale=(0.37, 1.9)))
    for _ in range(20):
        assert set(tf(image=image, mask=mask)["mask"].unique().tolist()) <= {1, 3, 255}


def test_linear_mask_interpolation_is_refused():
    with pytest.raises(ValueError, match="nearest"):
        check_mask_interpolation([A.OneOf([A.RandomScale(mask_interpolation=1)])])
    with pytest.raises(ValueError, match="255"):
        check_mask_interpolation([A.PadIfNeeded(64, 64, fill_mask=0)])
    check_mask_interpolation(segmentation_train(64))


def test_collate_pads_with_ignore():
    a = {"image": torch.ones(3, 5, 7), "target": torch.zeros(5, 7, dtype=torch.long), "meta": {"i": 0}}
    b = {"image": torch.ones(3, 6, 4), "target": torch.ones(6, 4, dtype=torch.long), "meta": {"i": 1}}
    batch = seg_collate([a, b])
    assert batch["image"].shape == (2, 3, 6, 7) and batch["target"].shape == (2, 6, 7)
    assert (batch["target"][0, 5] == 255).all() and (batch["target"][1, :, 4:] == 255).all()
    assert (batch["image"][1, :, :, 4:] == 0).all() and batch["meta"] == [{"i": 0}, {"i": 1}]


def test_coco_masks_agree_with_voc_masks(shapes_root):
    voc = VOCSegmentation(shapes_root / "voc", "val", 5)
    coco = COCOSegmentation(shapes_root / "coco", "val", 5)  # ids 1,3,7,12 -> 1..4 in id order
    assert coco.category_map == {1: 1, 3: 2, 7: 3, 12: 4}
    agree = []
    for i in range(len(voc)):
        _, mv = voc.load(i)
        _, mc = coco.load(i)
        # crowd regions are ignore in both
        assert ((mc == 255) == (mv == 255)).mean() > 0.99
        assert set(np.unique(mc).tolist()) - {255} <= set(np.unique(mv).tolist())
        agree.append((mv == mc).mean())
    assert np.mean(agree) > 0.98  # polygons vs rasterised masks differ only at boundaries


def test_coco_crowd_and_custom_mapping(shapes_root):
    # every shape merged into class 1; crowd regions (category 1) are ignore
    coco = COCOSegmentation(shapes_root / "coco", "train", 2, category_map={1: 1, 3: 1, 7: 1, 12: 1})
    crowd_imgs = {a["image_id"] for a in coco.coco.dataset["annotations"] if a["iscrowd"]}
    assert crowd_imgs
    idx = coco.ids.index(sorted(crowd_imgs)[0])
    _, mask = coco.load(idx)
    assert set(np.unique(mask).tolist()) <= {0, 1, 255} and (mask == 255).any()
    # unmapped categories are background; their crowds too
    only_circles = COCOSegmentation(shapes_root / "coco", "train", 2, category_map={3: 1})
    _, m2 = only_circles.load(idx)
    assert not (m2 == 255).any()
    assert COCO_TO_VOC[1] == 15 and COCO_TO_VOC[5] == 1 and len(COCO_TO_VOC) == 20  # person, aeroplane


def test_coco_datamodule_and_mapping_errors(shapes_root):
    dm = COCOSegDataModule(str(shapes_root / "coco"), num_classes=5, category_map=None, train_split="train",
                           val_split="val", crop_size=48, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].shape == (2, 48, 48)
    with pytest.raises(ValueError, match="outside 1..2"):
        COCOSegmentation(shapes_root / "coco", "val", 3, category_map={1: 3})


# ---- bad input: each error names the file --------------------------------------------------

@pytest.fixture
def voc_copy(shapes_root, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(shapes_root / "voc", root)
    stems = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    return root, stems


def _write_mask(path, array):
    png = Image.fromarray(array.astype(np.uint8), mode="P")
    png.putpalette(VOC_PALETTE)
    png.save(path)


def test_mask_with_unknown_value(voc_copy):
    root, stems = voc_copy
    bad = root / "SegmentationClass" / f"{stems[2]}.png"
    m = np.array(Image.open(bad))
    m[0, 0] = 9
    _write_mask(bad, m)
    ds = VOCSegmentation(root, "val", 5)
    with pytest.raises(DataError, match=rf"{bad}.*values \[9\].*neither a class"):
        ds[2]


def test_mask_of_another_size(voc_copy):
    root, stems = voc_copy
    bad = root / "SegmentationClass" / f"{stems[1]}.png"
    _write_mask(bad, np.zeros((50, 60)))
    with pytest.raises(DataError, match=rf"{bad}.*60x50.*96x96"):
        VOCSegmentation(root, "val", 5)[1]


def test_missing_mask(voc_copy):
    root, stems = voc_copy
    gone = root / "SegmentationClass" / f"{stems[0]}.png"
    gone.unlink()
    with pytest.raises(DataError, match=rf"{gone}: mask file not found"):
        VOCSegmentation(root, "val", 5)


def test_list_naming_missing_images(voc_copy):
    root, stems = voc_copy
    lst = root / "ImageSets/Segmentation/val.txt"
    lst.write_text("\n".join(stems + ["does_not_exist"]) + "\n")
    with pytest.raises(DataError, match=rf"{lst}: names 1 image.*does_not_exist.jpg"):
        VOCSegmentation(root, "val", 5)


def test_rgb_mask_is_refused(voc_copy):
    root, stems = voc_copy
    bad = root / "SegmentationClass" / f"{stems[0]}.png"
    Image.new("RGB", (96, 96)).save(bad)
    with pytest.raises(DataError, match=rf"{bad}: mask has mode RGB"):
        VOCSegmentation(root, "val", 5)[0]
