"""Checkpoint metadata checks: another task, another width, foreign files, unsafe builders."""

from __future__ import annotations

import pytest
import torch

from mnv2_tasks import load_model
from mnv2_tasks.checkpoint import build_net, check_compatible
from mnv2_tasks.models import CheckpointError, MobileNetV2


def _fake_ckpt(path, task="classification", width=0.35, target="mnv2_tasks.models.MobileNetV2"):
    net = MobileNetV2(num_classes=4, width_mult=width)
    spec = {"_target_": target, "num_classes": 4, "width_mult": width, "dropout": 0.0}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "mnv2_tasks": {"task": task, "net": spec, "input": {"image_size": 48}}}, path)
    return net, spec


def test_checkpoint_of_another_task_is_refused(tmp_path):
    _, spec = _fake_ckpt(tmp_path / "det.ckpt", task="detection")
    with pytest.raises(CheckpointError, match=r"det.ckpt: checkpoint of task 'detection'.*run with task=detection"):
        check_compatible(tmp_path / "det.ckpt", "classification", spec)


def test_checkpoint_of_another_width_is_refused(tmp_path):
    _, spec = _fake_ckpt(tmp_path / "w.ckpt", width=0.35)
    with pytest.raises(CheckpointError, match=r"width_mult=0.35.*model.net.width_mult=0.35"):
        check_compatible(tmp_path / "w.ckpt", "classification", {**spec, "width_mult": 1.0})


def test_load_model_round_trip_and_metadata(tmp_path):
    net, _ = _fake_ckpt(tmp_path / "c.ckpt")
    loaded = load_model(tmp_path / "c.ckpt")
    assert loaded.task == "classification" and loaded.input_spec["image_size"] == [48, 48]
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_load_model_refuses_plain_weight_files(tmp_path):
    torch.save(MobileNetV2().state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="plain.pth: not a training checkpoint of this package"):
        load_model(tmp_path / "plain.pth")


def test_builders_outside_the_package_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="refusing to build 'os.system'"):
        build_net({"_target_": "os.system", "command": "echo hi"})
    _fake_ckpt(tmp_path / "evil.ckpt", target="subprocess.call")
    with pytest.raises(CheckpointError, match="refusing to build"):
        load_model(tmp_path / "evil.ckpt")


def test_model_record_reads_once_with_older_files_defaults(tmp_path):
    """One reading of a checkpoint: the image size in its one form ([H, W]) whatever form the file wrote, and a QAT
    checkpoint written before checkpoints recorded their int8 scheme gets the scheme those files had (u8)."""
    import json

    from mnv2_tasks.checkpoint import OLD_FILE_SCHEME, ModelRecord

    _fake_ckpt(tmp_path / "c.ckpt")
    record = ModelRecord.read(tmp_path / "c.ckpt")
    assert record.task == "classification" and record.quant is None and record.input["image_size"] == [48, 48]
    assert record.net["width_mult"] == 0.35 and "net.stem.conv.weight" in record.state_dict
    assert json.loads(record.to_json()) == {"task": "classification", "net": record.net, "input": {"image_size": [48, 48]},
                                            "quant": None}
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=True)
    ckpt["mnv2_tasks_quant"] = {"mode": "qat", "image_size": [40, 56]}  # an older QAT file: no scheme recorded
    torch.save(ckpt, tmp_path / "q.ckpt")
    quant = ModelRecord.read(tmp_path / "q.ckpt").quant
    assert quant == {"mode": "qat", "image_size": [40, 56], "scheme": OLD_FILE_SCHEME} and OLD_FILE_SCHEME == "u8"
