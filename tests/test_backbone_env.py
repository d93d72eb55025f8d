"""A stage whose backbone is a KerasHub preset folder records the sha256 of its weights in env.json
(``backbone_sha256``, beside ``backbone_preset``): the same path can hold other weights tomorrow.
``patchcfg analyze`` shows it as ``run.backbone_sha256``. The file is hashed once per process."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from patchcfg.stages.runner import backbone_facts


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def fake_preset(folder, content=b"weights"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.weights.h5").write_bytes(content)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """The folders :func:`patchcfg.models.presets.weights_digest` was asked to hash."""
    import patchcfg.models.presets as presets

    calls, digest = [], presets.weights_digest
    monkeypatch.setattr(presets, "weights_digest", lambda folder: calls.append(folder) or digest(folder))
    return calls


def test_a_preset_folder_is_recorded_with_its_digest_hashed_once_until_the_file_changes(tmp_path, counted):
    folder = fake_preset(tmp_path / "dino")
    config = {"backbone": {"name": "keras_hub", "preset": str(folder)}}
    facts = backbone_facts(config, "finetune")
    assert facts == {"backbone_preset": str(folder), "backbone_sha256": sha256(folder / "model.weights.h5")}
    assert backbone_facts(config, "embed") == facts
    assert len(counted) == 1  # the second stage of the process reads the cache
    (folder / "model.weights.h5").write_bytes(b"other weights")  # new size and mtime: hashed again
    assert backbone_facts(config, "finetune")["backbone_sha256"] == hashlib.sha256(b"other weights").hexdigest()
    assert len(counted) == 2


def test_the_distill_stage_records_its_student_and_other_backbones_record_nothing(tmp_path, counted):
    student = fake_preset(tmp_path / "student", b"student")
    config = {"backbone": {"name": "tiny"},
              "distill": {"student": {"name": "keras_hub", "preset": str(student)}}}
    assert backbone_facts(config, "finetune") == {}
    assert backbone_facts(config, "distill")["backbone_sha256"] == hashlib.sha256(b"student").hexdigest()
    handle = {"backbone": {"name": "keras_hub", "preset": "kaggle://keras/dinov2/keras/dinov2_small"}}
    assert backbone_facts(handle, "finetune") == {"backbone_preset": "kaggle://keras/dinov2/keras/dinov2_small"}
    relative = {"backbone": {"name": "keras_hub", "preset": os.path.relpath(student)}}
    assert backbone_facts(relative, "finetune")["backbone_preset"] == str(student)
    assert len(counted) == 1


@pytest.mark.slow
def test_a_finetune_with_a_keras_hub_backbone_records_the_digest_that_analyze_shows(
        tmp_path, digits_table, finetune_config):
    import yaml
    from click.testing import CliRunner

    from patchcfg import analyze
    from patchcfg.cli import main
    from patchcfg.models.foundation import save_random_preset
    from patchcfg.stages import run_finetune

    labels = digits_table(tmp_path, n=24)
    config = yaml.safe_load(finetune_config(tmp_path, labels, batch_size=8, steps_per_epoch=1,
                                            stages=[{"epochs": 1, "lr": 0.01}]).read_text())
    preset = save_random_preset(str(tmp_path / "preset"), "dinov2", image_size=16, patch_size=4, layers=1, hidden=16)
    config = {**config, "name": "hub", "backbone": {"name": "keras_hub", "preset": preset}}
    run_finetune(config, root=tmp_path / "exp", verbose=0)
    env = json.loads((tmp_path / "exp" / "hub" / "finetune" / "env.json").read_text())
    digest = sha256(os.path.join(preset, "model.weights.h5"))
    assert env["backbone_sha256"] == digest and env["backbone_preset"] == preset
    assert "versions" in env and "precision" in env  # added to what the stage records

    [row] = analyze.analyze([tmp_path / "exp"]).rows
    assert row.config["run.backbone_sha256"] == digest
    assert [r.name for r in analyze.analyze([tmp_path / "exp"], filters=[f"run.backbone_sha256={digest}"]).rows] \
        == ["hub"]
    shown = CliRunner().invoke(main, ["analyze", str(tmp_path / "exp"), "--filter", f"run.backbone_sha256={digest}"])
    assert shown.exit_code == 0 and "hub" in shown.output, shown.output
