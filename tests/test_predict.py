"""Predict = evaluation: the Predictor and tools/predict.py give exactly what the reported metrics scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnv2_tasks.predict import Predictor
from mnv2_tasks.predict_cli import main as predict_main


def _image_id_records(pred_json: Path, ann_file: Path) -> list[dict]:
    """predict's records with the annotation file's image ids in place of the file names."""
    ann = json.loads(ann_file.read_text())
    ids = {im["file_name"]: im["id"] for im in ann["images"]}
    return [{**{k: v for k, v in r.items() if k != "file_name"}, "image_id": ids[Path(r["file_name"]).name]}
            for r in json.loads(pred_json.read_text())]


def _score_predictions(pred_json: Path, ann_file: Path) -> float:
    """pycocotools on predict's records."""
    from mnv2_tasks.metrics.coco_eval import evaluate_results

    return evaluate_results(ann_file, _image_id_records(pred_json, ann_file))[0]["mAP"]


def _by_image(records: list[dict]) -> dict:
    """image id -> its (category id, score, box to 1e-3 pixel) rows, best score first (ties by category and box)."""
    out: dict = {}
    for r in records:
        out.setdefault(r["image_id"], []).append((r["category_id"], r["score"], [round(v, 3) for v in r["bbox"]]))
    return {k: sorted(v, key=lambda t: (-t[1], t[0], t[2])) for k, v in out.items()}


def test_detection_predict_json_is_the_runs_evaluation(tiny_detector, shapes_root, tmp_path):
    # evaluated one image per batch, as the predictor runs: the same kernels on the same shapes give the same floats.
    # (A batch of 6 computes the convolutions in another order: scores move by an ulp, and this barely trained
    # detector's near-tied scores then keep other boxes.) The run trains channels-last, so this also checks that the
    # predictor runs in the memory format evaluation ran in.
    from mnv2_tasks.checkpoint import read_checkpoint

    run = tiny_detector  # debug=tiny_detection: two epochs, validated after each, one image per batch
    assert read_checkpoint(run.last)["mnv2_tasks"]["input"]["channels_last"]
    metrics, ckpt = run.metrics, run.last  # metrics.json holds the last validation
    assert predict_main([str(ckpt), str(shapes_root / "coco" / "val"), "--out", str(tmp_path / "p"), "--json"]) == 0
    ann = shapes_root / "coco" / "annotations" / "instances_val.json"
    predicted = _image_id_records(tmp_path / "p" / "predictions.json", ann)
    evaluated = json.loads((run.dir / "val_predictions.json").read_text())
    assert len(predicted) == len(evaluated) == metrics["num_detections"] > 0
    # every detection: the same class, score and box (predict records boxes to 1e-3 pixel)
    assert _by_image(predicted) == _by_image(evaluated)
    assert _score_predictions(tmp_path / "p" / "predictions.json", ann) == pytest.approx(metrics["mAP"], abs=1e-4)
    assert len(list((tmp_path / "p").glob("*.pred.png"))) == 12
    assert "AP_per_class" in metrics and set(metrics["AP_per_class"]) == {"circle", "square", "triangle", "star"}
    from PIL import Image

    # 12 val images of 64 px, each as ground truth beside prediction (captioned; a caption strip more where no box passes
    # the threshold): 4 rows of 3 pairs
    grid = Image.open(run.dir / "val_predictions.png")
    assert grid.size[0] == 3 * (2 * (64 + 2) + 2) and grid.size[1] in (4 * (64 + 12 + 2 + 2), 4 * (64 + 24 + 2 + 2))


def test_segmentation_predictor_masks_score_the_runs_miou(tiny_segmenter, shapes_root):
    from mnv2_tasks.data.images import read_rgb
    from mnv2_tasks.metrics.segmentation import ConfusionMatrix

    # debug=tiny_segmentation: one image per batch, as the predictor runs; one epoch: metrics.json is last.ckpt's
    metrics = tiny_segmenter.metrics
    predictor = Predictor(tiny_segmenter.last)
    assert predictor.input_spec["image_size"] is None  # evaluated at full resolution: recorded as such
    voc = shapes_root / "voc"
    confmat = ConfusionMatrix(5)
    from PIL import Image

    for stem in (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        mask = predictor(read_rgb(voc / "JPEGImages" / f"{stem}.jpg"))["mask"]
        target = np.asarray(Image.open(voc / "SegmentationClass" / f"{stem}.png"))
        assert mask.shape == target.shape
        confmat.update(torch.from_numpy(mask)[None].long(), torch.from_numpy(target)[None].long())
    assert confmat.compute()["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-6)


def test_classification_predictor_top1_is_the_runs(tiny_classifier, shapes_root):
    from mnv2_tasks.data.images import read_rgb

    # debug=tiny_classification: one image per batch, as the predictor runs; metrics.json is last.ckpt's validation
    metrics = tiny_classifier.metrics
    predictor = Predictor(tiny_classifier.last)
    names = predictor.class_names
    hits = total = 0
    for cls_dir in sorted((shapes_root / "imagefolder" / "val").iterdir()):
        for f in sorted(cls_dir.iterdir()):
            hits += predictor(read_rgb(f))["topk"][0][1] == cls_dir.name
            total += 1
    assert set(names) == {"circle", "square", "star", "triangle"}
    assert hits / total == pytest.approx(metrics["top1"], abs=1e-6)


def test_torchvision_imagenet_weights_print_imagenet_classes(tmp_path, shapes_root, capsys):
    """The articles' cat demo: a torchvision MobileNetV2 file (random weights here) names ImageNet classes."""
    import torchvision
    from torchvision.models import MobileNet_V2_Weights

    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "mobilenet_v2.pth")
    image = next((shapes_root / "coco" / "val").glob("*.jpg"))
    assert predict_main([str(tmp_path / "mobilenet_v2.pth"), str(image), "--out", str(tmp_path / "p"), "--json"]) == 0
    top5 = json.loads((tmp_path / "p" / "predictions.json").read_text())[0]["topk"]
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    # as Keras's decode_predictions: the WordNet id and the name (index 281: n02123045, tabby)
    assert len(top5) == 5 and all(t["name"].split(" ", 1)[1] == categories[t["label"]] for t in top5)
    assert all(t["name"].split(" ", 1)[0].startswith("n") and len(t["name"].split(" ", 1)[0]) == 9 for t in top5)
    from mnv2_tasks.predict import imagenet_class_names

    assert imagenet_class_names()[281] == "n02123045 tabby"
    printed = capsys.readouterr().out
    assert f"{image}: " + ", ".join(f"{t['name']} {t['score']:.3f}" for t in top5) in printed  # the top-5, printed
    assert (tmp_path / "p" / f"{image.stem}.pred.png").is_file()


def test_video_file_goes_through_the_stream_path(tiny_classifier, shapes_root, tmp_path, capsys):
    import cv2

    frames = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:5]
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 96))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    assert predict_main([str(tiny_classifier.last), str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "(5 frames" in out and "4 frames: p50" in out and "frames/s" in out  # the warm-up frame left out of the summary
    assert all(f"{stage} " in out for stage in ("decode", "preprocess", "model", "postprocess", "tracking", "writing"))
    cap = cv2.VideoCapture(str(tmp_path / "p" / "clip.pred.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)  # the source's rate


def test_bad_model_files_and_inputs_are_one_line_errors(tiny_classifier, shapes_root, tmp_path, capsys):
    ckpt = str(tiny_classifier.last)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(SystemExit, match=r"^error: .*broken.onnx: not a valid ONNX model"):
        predict_main([str(tmp_path / "broken.onnx"), str(shapes_root / "coco" / "val")])
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^error: .*broken.ckpt: not a loadable weights file"):
        predict_main([str(tmp_path / "broken.ckpt"), str(shapes_root / "coco" / "val")])
    with pytest.raises(SystemExit, match=r"^error: .*missing.jpg: no such file or folder"):
        predict_main([ckpt, str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*empty: no images"):
        predict_main([ckpt, str(tmp_path / "empty")])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = sorted((shapes_root / "coco" / "val").glob("*.jpg"))[:2]
    for f in good:
        (mixed / f.name).write_bytes(f.read_bytes())
    (mixed / "zz_truncated.jpg").write_bytes(good[0].read_bytes()[:200])
    assert predict_main([ckpt, str(mixed), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "zz_truncated.jpg" in err and "corrupt" in err
    assert len(list((tmp_path / "p").glob("*.pred.png"))) == 2  # the good ones are still processed


def test_curves_are_grouped_and_constant_series_left_out(tmp_path):
    from mnv2_tasks.plots import _panels, plot_training_curves

    series = {"train/loss": [(1, 2.0), (2, 1.0)], "val/loss": [(2, 1.5), (4, 1.2)], "val/mAP": [(2, 0.1), (4, 0.3)],
              "val/mAP50": [(2, 0.2), (4, 0.5)], "val/num_images": [(2, 12.0), (4, 12.0)],
              "val/anchor_coverage": [(2, 0.89), (4, 0.89)], "val/AR100": [(2, 0.3), (4, 0.4)]}
    assert _panels(series) == [("loss", ["train/loss", "val/loss"]), ("COCO mAP", ["val/mAP", "val/mAP50"]),
                               ("COCO recall", ["val/AR100"])]
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss,val/mAP\n0,1,2.0,\n0,2,1.0,0.1\n1,4,,0.3\n")
    assert plot_training_curves(csv_path, tmp_path / "c.png").is_file()


def test_fast_preprocessing_is_the_eval_pipeline_bit_for_bit():
    """The Predictor's OpenCV fast path computes exactly the recorded albumentations pipeline (any frame size)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from mnv2_tasks.data.det_transforms import detection_pipeline
    from mnv2_tasks.data.inference import EvalPreprocess, transform_spec
    from mnv2_tasks.data.transforms import classification_eval, compose

    per_image = A.Compose([A.Resize(64, 64), A.Normalize(normalization="image"), ToTensorV2()])  # no fixed table
    rng = np.random.default_rng(0)
    for spec, fast in (({"eval_transform": transform_spec(detection_pipeline([], 160))}, True), ({"image_size": None}, True),
                       ({"eval_transform": transform_spec(compose(classification_eval(64)))}, False),
                       ({"eval_transform": transform_spec(per_image)}, False)):
        pre = EvalPreprocess(spec)
        assert (pre._fast is not None) == fast
        for shape in ((160, 160, 3), (97, 131, 3), (300, 220, 3)):
            frame = (rng.random(shape) * 256).astype(np.uint8)
            ref = torch.as_tensor(pre.transform(image=frame)["image"]).float()
            got = pre(frame)
            assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_camera_stream_video_and_output_failures_are_one_line_errors(tiny_classifier, shapes_root, tmp_path):
    ckpt = str(tiny_classifier.last)
    with pytest.raises(SystemExit, match=r"^error: camera 7: no such camera"):
        predict_main([ckpt, "7", "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit, match=r"^error: rtsp://127.0.0.1:9/none: cannot connect to this stream"):
        predict_main([ckpt, "rtsp://127.0.0.1:9/none", "--out", str(tmp_path / "p")])
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(SystemExit, match=r"^error: .*broken.mp4: cannot decode this video"):
        predict_main([ckpt, str(tmp_path / "broken.mp4"), "--out", str(tmp_path / "p")])
    (tmp_path / "taken").write_text("a file")
    image = str(next((shapes_root / "coco" / "val").glob("*.jpg")))
    with pytest.raises(SystemExit, match=r"^error: --out .*taken: a file, not a folder"):
        predict_main([ckpt, image, "--out", str(tmp_path / "taken")])
    xml = tmp_path / "lonely.xml"
    xml.write_text("<net/>")  # OpenVINO IR without its .bin
    with pytest.raises(SystemExit, match=r"^error: .*lonely.xml: OpenVINO IR needs the .xml and its .bin"):
        predict_main([str(xml), image, "--out", str(tmp_path / "p")])


def test_show_without_a_window_is_a_one_line_error(tiny_classifier, shapes_root, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match=r"^error: --show: no display here"):
        predict_main([str(tiny_classifier.last), str(shapes_root / "coco" / "val"), "--show", "--out", str(tmp_path / "p")])
    monkeypatch.setenv("DISPLAY", ":99")  # a display, but this OpenCV (headless) has no windows
    with pytest.raises(SystemExit, match=r"^error: --show: this OpenCV has no window support"):
        predict_main([str(tiny_classifier.last), str(shapes_root / "coco" / "val"), "--show", "--out", str(tmp_path / "p")])
