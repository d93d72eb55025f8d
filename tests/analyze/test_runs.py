"""patchcfg.analyze.runs: reading a run (config, state, recorded facts), broken folders, --stage, --filter."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from patchcfg import analyze as lib
from patchcfg.errors import UserError


def test_flatten_nested_lists_bools_nulls():
    cfg = {"a": {"b": {"c": 1}, "flag": False, "none": None, "empty": {}},
           "stages": [{"lr": 0.1}, {"lr": 0.01, "unfreeze": True}], "shape": [32, 32], "x": []}
    assert lib.flatten(cfg) == {
        "a.b.c": 1, "a.flag": False, "a.none": None, "a.empty": {},
        "stages.0.lr": 0.1, "stages.1.lr": 0.01, "stages.1.unfreeze": True,
        "shape": [32, 32], "x": [],
    }


def test_broken_folders_are_reported_and_skipped(tmp_path, config, curves, make_run, row_named):
    make_run(tmp_path, "good", metrics=curves())
    make_run(tmp_path, "good2", config(seed=5), metrics=curves())
    bad_yaml = make_run(tmp_path, "bad_yaml", metrics=curves())
    (bad_yaml / "config.yaml").write_text("name: x\nseed: 1: 2\n")
    bad_json = make_run(tmp_path, "bad_json", metrics=curves())
    (bad_json / "finetune" / "status.json").write_text("{not json")
    bad_csv = make_run(tmp_path, "bad_csv", config(backbone__width=3.0), metrics=curves())
    with open(bad_csv / "finetune" / "metrics.csv", "a") as handle:
        handle.write("1,2,3,4,5,6,7,8,9,10\n")
    no_epoch = make_run(tmp_path, "no_epoch", config(backbone__width=4.0))
    (no_epoch / "finetune" / "metrics.csv").write_text("val_auc\n0.5\n")
    empty = make_run(tmp_path, "empty_csv", config(backbone__width=5.0))
    (empty / "finetune" / "metrics.csv").write_text("")
    bad_summary = make_run(tmp_path, "bad_summary", config(backbone__width=6.0))
    (bad_summary / "finetune" / "summary.json").write_text("[1, 2")

    seen = []
    result = lib.analyze([tmp_path], on_problem=seen.append)

    assert [row.name for row in result.rows] == ["good*"]
    assert row_named(result, "good*").n == 4
    reasons = {p.path.relative_to(tmp_path).as_posix(): p.reason for p in result.problems}
    assert set(reasons) == {
        "bad_yaml/config.yaml", "bad_json/finetune/status.json", "bad_csv/finetune/metrics.csv",
        "no_epoch/finetune/metrics.csv", "empty_csv/finetune/metrics.csv", "bad_summary/finetune/summary.json",
    }
    assert reasons["bad_yaml/config.yaml"].startswith("invalid YAML")
    assert "line 2" in reasons["bad_yaml/config.yaml"]
    assert reasons["bad_json/finetune/status.json"].startswith("invalid JSON")
    assert "Expected 6 fields in line 8, saw 10" in reasons["bad_csv/finetune/metrics.csv"]
    assert "no 'epoch' column" in reasons["no_epoch/finetune/metrics.csv"]
    assert seen == result.problems
    assert result.keys == []  # the broken runs do not count as configurations


def test_stage_option_selects_one_stage(tmp_path, curves, make_run):
    folder = make_run(tmp_path, "exp", metrics=curves())
    (folder / "pretrain").mkdir()
    (folder / "pretrain" / "status.json").write_text(json.dumps({"state": "complete"}))
    pd.DataFrame({"epoch": [0], "loss": [1.0]}).to_csv(folder / "pretrain" / "metrics.csv", index=False)
    assert [row.stage for row in lib.analyze([tmp_path]).rows] == ["pretrain", "finetune"]
    assert [row.stage for row in lib.analyze([tmp_path], stage="finetune").rows] == ["finetune"]
    with pytest.raises(UserError, match="no distill runs"):
        lib.analyze([tmp_path], stage="distill")


def test_filters_on_numbers_bools_globs_and_state(tmp_path, config, curves, make_run):
    make_run(tmp_path, "a", config(backbone__width=0.5), metrics=curves())
    make_run(tmp_path, "b", config(backbone__width=1.0, finetune__stages__0__lr=1e-4), metrics=curves())
    make_run(tmp_path, "c", config(backbone__width=1.0, backbone__weights=True), metrics=curves(), state="failed")
    names = lambda filters: sorted(row.name for row in lib.analyze([tmp_path], filters=filters).rows)  # noqa: E731
    assert names(["backbone.width=1.0"]) == ["b", "c"]
    assert names(["backbone.width=1"]) == ["b", "c"]
    assert names(["finetune.stages.0.lr=1e-4"]) == ["b"]
    assert names(["backbone.weights=true"]) == ["c"]
    assert names(["backbone.weights=null"]) == ["a", "b"]
    assert names(["state=failed"]) == ["c"]
    assert names(["name=[ab]", "backbone.width=1.0"]) == ["b"]
    with pytest.raises(UserError, match="did you mean backbone.width"):
        lib.analyze([tmp_path], filters=["backbone.widht=1"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        lib.analyze([tmp_path], filters=["backbone.width"])
    for no_match in ("backbone.width=7", "backbone.weights=1"):  # 1 is not true
        with pytest.raises(UserError, match="match --filter"):
            lib.analyze([tmp_path], filters=[no_match])


def test_a_stage_is_compared_only_on_the_settings_that_can_change_it(tmp_path, config, make_run):
    # Two experiments pretrained alike; only their fine-tuning differs. Their pretrain rows are
    # one configuration (finetune settings cannot change a pretraining result).
    for name, lr in (("a", 0.001), ("b", 0.01)):
        cfg = config(finetune__stages=[{"epochs": 3, "lr": lr}])
        cfg["pretrain"] = {"method": "simclr", "epochs": 2}
        make_run(tmp_path, name, cfg, stage="pretrain")
        make_run(tmp_path, name, cfg, stage="finetune")
    result = lib.analyze([tmp_path])
    pretrain_rows = [r for r in result.rows if r.stage == "pretrain"]
    assert len(pretrain_rows) == 1 and len(pretrain_rows[0].runs) == 2
    assert result.keys == ["finetune.stages.0.lr"]  # what differs within a stage, not across stages


def test_the_precision_a_run_computed_under_separates_it_from_the_same_config_elsewhere(
        tmp_path, config, curves, make_run):
    """``mixed_precision: auto`` is float32 on one machine and mixed_bfloat16 on another: the same
    config, different numerics. The policy each stage recorded in env.json is a ``run.precision``
    key, shown when it differs and usable in --filter; runs without one (older) have it missing."""
    for seed, precision in enumerate(("float32", "float32", "mixed_bfloat16", None)):
        folder = make_run(tmp_path, f"auto.seed-{seed}", config(seed=seed), metrics=curves(start=0.5 + 0.01 * seed))
        if precision is not None:
            (folder / "finetune" / "env.json").write_text(json.dumps({"precision": precision, "devices": []}))

    result = lib.analyze([tmp_path])

    assert result.keys == ["run.precision"]
    by_precision = {row.config.get("run.precision", "missing"): len(row.runs) for row in result.rows}
    assert by_precision == {"float32": 2, "mixed_bfloat16": 1, "missing": 1}
    assert [row.name for row in lib.analyze([tmp_path], filters=["run.precision=mixed_bfloat16"]).rows] == [
        "auto.seed-2"]
