"""train(cfg) for segmentation on the embedded data: metrics.json, checkpoints, load_model, options."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mnv2_tasks import load_model
from mnv2_tasks.models.deeplabv3 import DeepLabV3, build_deeplabv3
from mnv2_tasks.tasks.segmentation import SegmentationModule, segmentation_loss
from mnv2_tasks.train import train

from conftest import TINY_SEG as TINY
CLASSES = ["background", "circle", "square", "triangle", "star"]


def _val_pixels(shapes_root) -> int:
    voc = shapes_root / "voc"
    stems = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    return sum(int((np.array(Image.open(voc / "SegmentationClass" / f"{s}.png")) != 255).sum()) for s in stems)


def test_train_segmentation_writes_metrics_and_checkpoint(make_cfg, shapes_root, tiny_segmenter):
    from mnv2_tasks.evaluate import evaluate

    metrics, out = tiny_segmenter.returned, str(tiny_segmenter.dir)
    saved = json.loads(open(f"{out}/metrics.json").read())
    assert saved["task"] == "segmentation" and saved["epochs"] == 1
    assert 0.0 <= saved["mIoU"] <= 1.0 and 0.0 <= saved["pixel_acc"] <= 1.0
    assert saved["mIoU"] == pytest.approx(metrics["mIoU"])
    # every non-ignored val pixel counted exactly once (full resolution), one image per batch and batches of 5 of 12
    assert saved["num_pixels"] == _val_pixels(shapes_root)
    in_fives = evaluate(make_cfg(*TINY, "data.eval_batch_size=5", f"ckpt={tiny_segmenter.last}", config_name="eval"))
    assert in_fives["num_pixels"] == _val_pixels(shapes_root)
    ious = [saved[f"iou_{c}"] for c in CLASSES]
    assert all(v is None or 0.0 <= v <= 1.0 for v in ious)
    present = [v for v in ious if v is not None]
    assert saved["mIoU"] == pytest.approx(sum(present) / len(present))
    assert [c for c, v in zip(CLASSES, ious) if v is None] == saved["absent_classes"]

    ckpt_path = f"{out}/checkpoints/last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["mnv2_tasks"]["task"] == "segmentation"
    assert ckpt["mnv2_tasks"]["net"]["num_classes"] == 5
    net = load_model(ckpt_path)
    assert isinstance(net, DeepLabV3) and not net.training
    spec = {k: v for k, v in ckpt["mnv2_tasks"]["net"].items() if k != "_target_"}
    assert spec["width_mult"] == 0.35 and spec["head_chs"] == 32
    ref = build_deeplabv3(**spec).eval()
    ref.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    x = torch.randn(1, 3, 97, 75)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))


def test_batch_size_one_aux_weights_cosine(make_cfg):
    cfg = make_cfg(*TINY, "data.batch_size=1", "trainer.max_epochs=1", "+trainer.limit_train_batches=3",
                   "model.net.aux=true", "model.net.aspp=true", "scheduler=cosine",
                   "model.class_weights=[0.5,1.0,1.0,1.0,1.0]", "callbacks=none")
    metrics = train(cfg)
    assert math.isfinite(metrics["pixel_acc"])


def test_num_classes_mismatch_is_explained(make_cfg):
    with pytest.raises(ValueError, match="has 5 classes.*model.net.num_classes=5"):
        train(make_cfg(*TINY, "model.net.num_classes=7", "model.class_names=null"))


def test_loss_ignores_255_and_survives_all_ignore_batches():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = segmentation_loss(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().sum() == 0
    target[0, 0, 0] = 2
    other = target.clone()
    other[1] = 255
    # pixels labelled 255 do not change the loss, whatever the logits there
    torch.testing.assert_close(segmentation_loss(logits, target), segmentation_loss(logits, other))
    expected = torch.nn.functional.cross_entropy(logits[0, :, 0, 0][None], torch.tensor([2]))
    torch.testing.assert_close(segmentation_loss(logits, target), expected)


def test_module_metrics_through_evaluate_with():
    net = build_deeplabv3(3, width_mult=0.35, head_chs=16).eval()
    module = SegmentationModule(net, optimizer=torch.optim.SGD, class_names=["bg", "a", "b"])
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :8] = 255
    target[:, 16:, 16:] = 1
    batches = [{"image": torch.randn(2, 3, 32, 32), "target": target}]
    # a perfect "model": one-hot logits of the target (ignore pixels predicted as 2)
    perfect = lambda images: torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()  # noqa: E731
    m = module.evaluate_with(perfect, batches, progress=False)
    assert m["mIoU"] == 1.0 and m["pixel_acc"] == 1.0
    assert m["absent_classes"] == ["b"] and math.isnan(m["iou_b"])
