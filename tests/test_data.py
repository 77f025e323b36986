"""The embedded data set and the ImageFolder loader, bad input included."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mnv2_tasks.data.imagefolder import ImageFolderDataModule, ImageFolderDataset
from mnv2_tasks.data.images import DataError
from mnv2_tasks.data.shapes import SHAPE_CATEGORIES, ensure_shapes
from tests.conftest import TEST_SHAPES_KW


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_shapes_is_deterministic_and_reused(tmp_path, shapes_root):
    again = ensure_shapes(tmp_path / "again", **TEST_SHAPES_KW)
    assert _digest(again) == _digest(shapes_root)
    stamp = (again / "COMPLETE.json").stat().st_mtime_ns
    assert ensure_shapes(again) == again and (again / "COMPLETE.json").stat().st_mtime_ns == stamp  # reused


def test_shapes_coco_has_what_real_data_has(shapes_root):
    coco = COCO(str(shapes_root / "coco/annotations/instances_train.json"))
    anns = coco.dataset["annotations"]
    ids = [c["id"] for c in coco.dataset["categories"]]
    assert ids == [c["id"] for c in SHAPE_CATEGORIES] and ids != list(range(1, len(ids) + 1))  # non-contiguous
    assert any(a["iscrowd"] for a in anns)
    assert any(isinstance(a["segmentation"], list) for a in anns) and any(isinstance(a["segmentation"], dict) for a in anns)
    with_objects = {a["image_id"] for a in anns if not a["iscrowd"]}
    assert len(with_objects) < len(coco.getImgIds())  # some images have no objects
    touching = [a for a in anns if a["bbox"][0] == 0 or a["bbox"][1] == 0]
    assert touching  # objects cut by the border
    for a in anns:  # every mask agrees with its box and area
        m = coco.annToMask(a)
        ys, xs = np.nonzero(m)
        assert m.sum() == pytest.approx(a["area"], rel=0.02, abs=3)
        x, y, w, h = a["bbox"]
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h


def test_shapes_voc_masks_match_images(shapes_root):
    voc = shapes_root / "voc"
    stems = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    for stem in stems:
        img = Image.open(voc / "JPEGImages" / f"{stem}.jpg")
        mask = Image.open(voc / "SegmentationClass" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == img.size
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3, 4, 255}


def test_imagefolder_reads_the_embedded_tree(shapes_root):
    dm = ImageFolderDataModule(root=str(shapes_root / "imagefolder"), image_size=48, batch_size=5, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 4 and dm.train_set.classes == ["circle", "square", "star", "triangle"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 3, 48, 48) and batch["target"].dtype.is_floating_point is False
    assert len(dm.val_set) == 24


def test_missing_root_names_the_path_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"nowhere/train: data root not found; set data.root"):
        ImageFolderDataset(tmp_path / "nowhere" / "train")


def test_empty_class_folder_is_an_error(tmp_path, shapes_root):
    root = tmp_path / "if"
    shutil.copytree(shapes_root / "imagefolder" / "train", root)
    for p in (root / "star").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"star: class folder has no images"):
        ImageFolderDataset(root)


def test_corrupt_image_names_the_file(tmp_path, shapes_root):
    root = tmp_path / "if"
    shutil.copytree(shapes_root / "imagefolder" / "val", root)
    bad = sorted((root / "square").iterdir())[0]
    bad.write_bytes(b"\xff\xd8\xff garbage")
    ds = ImageFolderDataset(root)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p == str(bad)][0]
    with pytest.raises(DataError, match=rf"{bad.name}: corrupt or unreadable image"):
        ds[idx]


def test_unknown_shapes_parameter_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="unknown parameters"):
        ensure_shapes(tmp_path, num_images=3)


def test_a_folder_that_reaches_a_file_twice_is_reported(tmp_path, shapes_root):
    """A link in one class folder to an image of another: the same picture trained (and scored) under two labels."""
    import shutil

    from mnv2_tasks.data.imagefolder import ImageFolderDataset

    root = Path(shutil.copytree(shapes_root / "imagefolder" / "val", tmp_path / "val"))
    star = sorted((root / "star").iterdir())[0]
    (root / "circle" / "looks_like_a_circle.jpg").symlink_to(star)
    with pytest.raises(DataError, match=r"star/\S+.jpg is the same file as \S+looks_like_a_circle.jpg"):
        ImageFolderDataset(root)


def test_a_split_list_that_names_an_image_twice_is_reported(tmp_path, shapes_root):
    import shutil

    from mnv2_tasks.data.voc import VOCSegmentation

    voc = Path(shutil.copytree(shapes_root / "voc", tmp_path / "voc"))
    lst = voc / "ImageSets" / "Segmentation" / "val.txt"
    stems = lst.read_text().split()
    lst.write_text("\n".join([*stems, stems[0]]) + "\n")
    with pytest.raises(DataError, match=rf"val.txt: .*{stems[0]}.jpg is listed twice"):
        VOCSegmentation(voc, "val", 5)


def test_images_are_read_upright_and_16_bit_by_its_range(tmp_path, shapes_root):
    """One decoder for training, evaluation and inference: an EXIF-rotated copy and a 16-bit copy of an image read as
    the original (the 16-bit rule: round(v * 255 / 65535)); palette, gray + alpha, CMYK and RGBA read as RGB."""
    from mnv2_tasks.data.images import read_rgb

    original = read_rgb(next((shapes_root / "coco" / "val").glob("*.jpg")))
    upright = Image.fromarray(original)
    exif = upright.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored turned the other way, as phones write it
    Image.fromarray(np.rot90(original, 1).copy()).save(tmp_path / "rotated.png", exif=exif.tobytes())
    assert np.array_equal(read_rgb(tmp_path / "rotated.png"), original)
    gray = np.asarray(Image.fromarray(original).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as im:
        assert im.mode.startswith("I")  # really 16-bit on disk
    assert np.array_equal(read_rgb(tmp_path / "gray16.png"), np.repeat(gray[..., None], 3, axis=2))  # not a white frame
    for mode in ("P", "LA", "CMYK", "RGBA"):
        Image.fromarray(original).convert(mode).save(tmp_path / f"m.{'jpg' if mode == 'CMYK' else 'png'}")
        got = read_rgb(tmp_path / f"m.{'jpg' if mode == 'CMYK' else 'png'}")
        assert got.shape == original.shape and got.dtype == np.uint8, mode


def test_preflight_reports_a_size_recorded_before_the_exif_rotation(tmp_path, shapes_root):
    from mnv2_tasks.data.images import read_rgb
    from mnv2_tasks.data.preflight import PreflightItem, check_item

    original = read_rgb(next((shapes_root / "coco" / "val").glob("*.jpg")))[:, :80]  # not square: 96 x 80
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(original, 1).copy()).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    h, w = original.shape[:2]
    assert check_item(PreflightItem(0, tmp_path / "phone.jpg", size=(h, w))) is None  # labelled upright: fine
    problem = check_item(PreflightItem(0, tmp_path / "phone.jpg", size=(w, h)))  # labelled on the stored pixels
    assert "phone.jpg" in problem and "EXIF orientation (6)" in problem and f"upright as {w}x{h}" in problem
