"""The detection benchmark's side-by-side training: variants interleaved per seed, means over seeds."""

from __future__ import annotations

import argparse
import json

import pytest

from mnv2_tasks.benchmarks import detection as bench


def test_side_by_side_interleaves_seeds_and_averages(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg):  # the composed config is what a real run would get
        calls.append((cfg.model.net._target_.rsplit(".", 1)[-1], cfg.seed, cfg.data.image_size, cfg.paths.output_dir))
        base = 0.3 if cfg.model.net._target_.endswith("build_ssdlite") else 0.2
        return {"mAP": base + cfg.seed / 1000, "mAP50": 0.5, "mAP75": 0.25, "mAP_small": 0.1, "AR100": 0.6}

    monkeypatch.setattr("mnv2_tasks.train.train", fake_train)
    args = argparse.Namespace(out_dir=str(tmp_path), variants=["ours_scratch", "torchvision"], seeds=[1, 7],
                              override=["data.image_size=96"])
    table = bench.train_side_by_side(args)
    # every variant at seed 1, then every variant at seed 7
    assert [(c[0], c[1]) for c in calls] == [("build_ssdlite", 1), ("build_torchvision_ssdlite", 1),
                                             ("build_ssdlite", 7), ("build_torchvision_ssdlite", 7)]
    assert all(c[2] == 96 for c in calls) and calls[0][3] == str(tmp_path / "ours_scratch_s1")
    rows = json.loads((tmp_path / "side_by_side.json").read_text())
    assert len(rows) == 4 and {r["seed"] for r in rows} == {1, 7}
    ours = next(line for line in table.splitlines() if line.startswith("| ours"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[4] == f"{0.304:.3f}"  # mean of 0.301 and 0.307
    assert cells[5] == "0.301 (1) / 0.307 (7)"


def test_side_by_side_single_run_has_no_seed_column():
    rows = [{"tag": "a", "model": "A", "width": 0.35, "input": 160, "epochs": 60, "seed": 42, "wall_s": 60.0,
             "mAP": 0.3, "mAP50": 0.5, "mAP75": 0.3, "mAP_small": None, "AR100": 0.5}]
    table = bench.side_by_side_table(rows)
    assert "per seed" not in table
    assert table.splitlines()[2].startswith("| A | 0.35 | 160 | 60 | 0.300 | 0.500 | 0.300 | nan | 0.500 | 1.0 min |")


@pytest.mark.parametrize("tag", sorted(bench.VARIANTS))
def test_every_variant_composes(tag):
    from mnv2_tasks.config import compose_train_config

    cfg = compose_train_config(["task=detection", *bench.VARIANTS[tag][1]])
    assert cfg.model.net._target_.split(".")[-1] in ("build_ssdlite", "build_torchvision_ssdlite", "build_torchvision_ssdlite_mnv2")
    assert cfg.model.channels_last is not tag.endswith("_nchw")


def test_nms_benchmark_times_every_way_on_the_same_candidates():
    from mnv2_tasks.benchmarks import detection_nms

    args = detection_nms.parser().parse_args(["--rounds", "1", "--repeats", "1", "--warmup", "0", "--batches", "2", "--topk", "300"])
    table = detection_nms.run(args)
    row = table.splitlines()[-1].strip("|").split("|")
    assert [c.strip() for c in row[:2]] == ["2", "600"]  # batch, candidates: 2 images x 300
    assert 0 < int(row[2]) <= 600 and row[-1].strip() == "yes"
