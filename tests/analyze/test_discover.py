"""patchcfg.analyze.discover: which folders are experiments, and which of their folders are runs."""

from __future__ import annotations

import pandas as pd
import pytest

from patchcfg import analyze as lib
from patchcfg.errors import UserError


def test_experiments_are_found_nested_and_folders_without_stages_ignored(tmp_path, config, make_run):
    make_run(tmp_path / "sweep1", "base_pretrain.temperature-0.1", config(), stage="pretrain",
             metrics=pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.5], "probe_accuracy": [0.3, 0.4]}))
    make_run(tmp_path / "sweep1", "base_pretrain.temperature-0.5", config(backbone__width=9), stage="pretrain",
             metrics=pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.0], "probe_accuracy": [0.3, 0.5]}))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "config.yaml").write_text("name: not-an-experiment\n")
    result = lib.analyze([tmp_path])
    assert sorted(row.name for row in result.rows) == [
        "sweep1/base_pretrain.temperature-0.1", "sweep1/base_pretrain.temperature-0.5"]
    assert result.metrics == ["loss", "probe_accuracy"]
    assert not result.problems


def test_missing_folder_and_folder_without_experiments(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        lib.analyze([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no experiments found"):
        lib.analyze([tmp_path / "empty"])


def test_overlapping_dirs_count_each_experiment_once(tmp_path, config, curves, make_run):
    make_run(tmp_path / "sweep", "a", metrics=curves())
    make_run(tmp_path / "sweep", "b", config(backbone__width=2.0), metrics=curves())
    result = lib.analyze([tmp_path, tmp_path / "sweep"])
    assert sorted(len(row.runs) for row in result.rows) == [1, 1]
    assert sorted(row.name for row in result.rows) == ["sweep/a", "sweep/b"]


def test_an_embed_stage_is_a_run_of_its_own_and_its_cache_facts_are_no_metrics(
        tmp_path, config, curves, make_run):
    cfg = config()
    cfg["embed"] = {"batch_size": 64}
    make_run(tmp_path, "a", cfg, metrics=curves())
    summary = {"images": 72, "dimensions": 512, "encoder": "a/pretrain/encoder.keras", "dtype": "float16",
               "replicas": 1, "files": "0f3a", "resumed_at": 0, "kept": 0, "images_per_second": 812.5,
               "steady_images_per_second": 900.0, "skipped_images": 0, "skipped": [], "seconds": 0.2}
    make_run(tmp_path, "a", cfg, stage="embed", summary=summary)
    result = lib.analyze([tmp_path])
    assert [(row.name, row.stage, row.state) for row in result.rows] == [
        ("a", "finetune", "complete"), ("a", "embed", "complete")]
    assert not result.problems
    assert not {"images", "dimensions", "images_per_second"} & set(result.metrics)
    assert "embed" in lib.STAGES
    [row] = lib.analyze([tmp_path], stage="embed", metrics=["images_per_second"]).rows
    assert row.metrics["images_per_second"][0] == 812.5
