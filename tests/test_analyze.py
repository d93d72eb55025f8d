"""Tests for patchcfg.analyze: flattening, directions, grouping, reading, sorting, output, plot."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from patchcfg import analyze as lib
from patchcfg.errors import UserError

BASE = {
    "name": "base",
    "seed": 0,
    "backbone": {"name": "resnet18", "width": 0.5, "weights": None},
    "finetune": {"folds_count": 2, "stages": [{"epochs": 3, "lr": 0.001}]},
}


def config(**changes) -> dict:
    """BASE with dotted-key changes applied (``finetune__stages`` style is not needed here)."""
    out = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = out
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value
    return out


def curves(folds=2, epochs=3, start=0.5, step=0.1, **extra) -> pd.DataFrame:
    """A metrics table: val_loss falls by ``step`` per epoch, val_auc rises, fold adds 0.01."""
    rows = []
    for fold in range(folds):
        for epoch in range(epochs):
            rows.append({"epoch": epoch, "fold": fold, "loss": 1.0 - step * epoch,
                         "val_loss": 1.0 - step * epoch + 0.01 * fold,
                         "val_auc": start + step * epoch + 0.01 * fold, "lr": 0.001, **extra})
    return pd.DataFrame(rows)


def make_run(root: Path, name: str, cfg: dict | None = None, stage: str = "finetune",
             state: str = "complete", metrics: pd.DataFrame | None = None, summary=None,
             error: str | None = None) -> Path:
    """Write one experiment stage in the documented folder layout."""
    folder = root / name
    (folder / stage).mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg if cfg is not None else config())
    cfg["name"] = Path(name).name
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    status = {"state": state, "started": "2024-01-01T00:00:00", "ended": None, "error": error}
    (folder / stage / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        metrics.to_csv(folder / stage / "metrics.csv", index=False)
    if summary is not None:
        (folder / stage / "summary.json").write_text(json.dumps(summary))
    return folder


def row_named(analysis, name) -> lib.Row:
    matches = [row for row in analysis.rows if row.name == name]
    assert len(matches) == 1, [row.name for row in analysis.rows]
    return matches[0]


# --- flattening and key selection -------------------------------------------------------------


def test_flatten_nested_lists_bools_nulls():
    cfg = {"a": {"b": {"c": 1}, "flag": False, "none": None, "empty": {}},
           "stages": [{"lr": 0.1}, {"lr": 0.01, "unfreeze": True}], "shape": [32, 32], "x": []}
    assert lib.flatten(cfg) == {
        "a.b.c": 1, "a.flag": False, "a.none": None, "a.empty": {},
        "stages.0.lr": 0.1, "stages.1.lr": 0.01, "stages.1.unfreeze": True,
        "shape": [32, 32], "x": [],
    }


def test_changed_keys_counts_missing_bool_and_null_as_values():
    configs = [
        {"a": 1, "flag": True, "w": None, "same": "x"},
        {"a": 1, "flag": False, "w": None, "same": "x", "extra": 3},
        {"a": 1, "flag": True, "same": "x"},
    ]
    keys = lib.ordered_keys(configs)
    assert keys == ["a", "flag", "w", "same", "extra"]
    assert lib.changed_keys(configs, keys) == ["flag", "w", "extra"]


def test_changed_keys_tells_true_from_one_and_null_from_missing():
    assert lib.changed_keys([{"a": True}, {"a": 1}], ["a"]) == ["a"]
    assert lib.changed_keys([{"a": None}, {}], ["a"]) == ["a"]
    assert lib.changed_keys([{"a": None}, {"a": None}], ["a"]) == []


def test_ordered_keys_puts_new_key_after_its_predecessor():
    first = {"data.x": 1, "finetune.stages.0.lr": 0.1, "query.n": 5}
    second = {"data.x": 1, "finetune.stages.0.lr": 0.1, "finetune.stages.1.lr": 0.01, "query.n": 5}
    assert lib.ordered_keys([first, second]) == [
        "data.x", "finetune.stages.0.lr", "finetune.stages.1.lr", "query.n"]


@pytest.mark.parametrize(("name", "direction"), [
    ("loss", "min"), ("val_loss", "min"), ("valLoss", "min"), ("val_mse", "min"), ("val_mae", "min"),
    ("rmse", "min"), ("mean_squared_error", "min"), ("val_error_rate", "min"), ("nll", "min"),
    ("val_macro_auc", "max"), ("val_accuracy", "max"), ("probe_accuracy", "max"), ("f1", "max"),
    ("precision", "max"),
])
def test_metric_direction_rules(name, direction):
    assert lib.metric_direction(name) == direction


def test_metric_direction_overrides():
    assert lib.metric_direction("val_auc", minimize=["val_auc"]) == "min"
    assert lib.metric_direction("val_loss", maximize=["val_loss"]) == "max"


# --- aggregation -----------------------------------------------------------------------------


def test_runs_differing_only_in_seed_are_one_row_with_n_folds_times_seeds(tmp_path):
    expected_auc, expected_loss = [], []
    for seed in range(3):
        frame = curves(folds=2, epochs=4, start=0.5 + 0.02 * seed)
        make_run(tmp_path, f"base.seed-{seed}", config(seed=seed), metrics=frame)
        for _, fold in frame.groupby("fold"):
            expected_auc.append(fold["val_auc"].max())
            expected_loss.append(fold["val_loss"].min())
    make_run(tmp_path, "other", config(backbone__width=1.0), metrics=curves())

    result = lib.analyze([tmp_path])

    row = row_named(result, "base.seed-*")
    assert (len(row.runs), row.n) == (3, 6)
    mean, std, count = row.metrics["val_auc"]
    assert count == 6
    assert mean == pytest.approx(np.mean(expected_auc))
    assert std == pytest.approx(np.std(expected_auc, ddof=1))
    assert row.metrics["val_loss"][0] == pytest.approx(np.mean(expected_loss))
    assert row_named(result, "other").n == 2
    assert result.keys == ["backbone.width"]
    assert "lr" not in result.metrics and "epoch" not in result.metrics


def test_best_epoch_is_taken_over_the_last_fine_tuning_stage(tmp_path):
    frame = pd.DataFrame({
        "epoch": [0, 1, 2, 3], "stage": [0, 0, 1, 1], "val_auc": [0.99, 0.98, 0.7, 0.8],
    })
    make_run(tmp_path, "staged", metrics=frame)
    row = lib.analyze([tmp_path]).rows[0]
    assert row.metrics["val_auc"][0] == pytest.approx(0.8)
    assert row.n == 1


def test_summary_json_is_the_fallback_without_metrics_csv(tmp_path):
    summary = {"folds": {"0": {"best": {"val_auc": 0.8}}, "1": {"val_auc": 0.9}},
               "mean": {"val_auc": 0.85}, "std": {"val_auc": 0.05}}
    make_run(tmp_path, "summary_only", summary=summary)
    make_run(tmp_path, "plain", config(backbone__width=2.0), summary={"best": {"val_auc": 0.7}, "final": {}})
    result = lib.analyze([tmp_path])
    assert row_named(result, "summary_only").metrics["val_auc"][:1] == pytest.approx((0.85,))
    assert row_named(result, "summary_only").n == 2
    mean, std, count = row_named(result, "plain").metrics["val_auc"]
    assert (mean, count) == (pytest.approx(0.7), 1) and np.isnan(std)


def test_failed_and_running_runs_are_their_own_rows(tmp_path):
    make_run(tmp_path, "a.seed-0", config(seed=0), metrics=curves())
    make_run(tmp_path, "a.seed-1", config(seed=1), metrics=curves(), state="failed",
             error="ResourceExhaustedError: OOM")
    make_run(tmp_path, "a.seed-2", config(seed=2), metrics=curves().iloc[:0], state="running")
    result = lib.analyze([tmp_path])
    states = {row.name: (row.state, row.n) for row in result.rows}
    assert states == {"a.seed-0": ("complete", 2), "a.seed-1": ("failed", 2), "a.seed-2": ("running", 0)}
    table = lib.render(result, "table")
    assert "failed" in table and "running" in table
    assert "a.seed-1: ResourceExhaustedError: OOM" in table


def test_experiments_are_found_nested_and_folders_without_stages_ignored(tmp_path):
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


def test_stage_option_selects_one_stage(tmp_path):
    folder = make_run(tmp_path, "exp", metrics=curves())
    (folder / "pretrain").mkdir()
    (folder / "pretrain" / "status.json").write_text(json.dumps({"state": "complete"}))
    pd.DataFrame({"epoch": [0], "loss": [1.0]}).to_csv(folder / "pretrain" / "metrics.csv", index=False)
    assert [row.stage for row in lib.analyze([tmp_path]).rows] == ["pretrain", "finetune"]
    assert [row.stage for row in lib.analyze([tmp_path], stage="finetune").rows] == ["finetune"]
    with pytest.raises(UserError, match="no distill runs"):
        lib.analyze([tmp_path], stage="distill")


# --- broken folders --------------------------------------------------------------------------


def test_broken_folders_are_reported_and_skipped(tmp_path):
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


def test_csv_fast_path_matches_file_by_file_reading(tmp_path):
    frames = {}
    for i in range(4):
        frame = curves(folds=1 + i % 2, epochs=2 + i, start=0.1 * i)
        if i == 3:
            frame = frame.drop(columns="loss")  # a different header
        frames[i] = frame
        make_run(tmp_path, f"r{i}", config(backbone__width=float(i)), metrics=frame)
    with open(tmp_path / "r1" / "finetune" / "metrics.csv", "a") as handle:
        handle.write("\n\n")  # blank lines are not rows
    result = lib.analyze([tmp_path])
    for i, frame in frames.items():
        row = row_named(result, f"r{i}")
        best = frame.groupby("fold")["val_auc"].max()
        assert row.metrics["val_auc"][0] == pytest.approx(best.mean())
        assert row.n == frame["fold"].nunique()


# --- sorting, selection, filters -------------------------------------------------------------


def _sortable_tree(tmp_path):
    for i, start in enumerate([0.5, 0.9, 0.7]):
        make_run(tmp_path, f"r{i}", config(backbone__width=float(i)), metrics=curves(start=start))
    make_run(tmp_path, "no_auc", config(backbone__width=9.0),
             metrics=pd.DataFrame({"epoch": [0], "fold": [0], "val_loss": [0.1]}))


def test_sort_ascending_and_descending_with_missing_last(tmp_path):
    _sortable_tree(tmp_path)
    names = lambda result: [row.name for row in result.rows]  # noqa: E731
    assert names(lib.analyze([tmp_path], sort_by="val_auc", ascending=True)) == ["r0", "r2", "r1", "no_auc"]
    assert names(lib.analyze([tmp_path], sort_by="val_auc", ascending=False)) == ["r1", "r2", "r0", "no_auc"]
    assert names(lib.analyze([tmp_path], sort_by="val_auc"))[0] == "r1"  # best first for a max metric
    assert names(lib.analyze([tmp_path], sort_by="val_loss"))[0] == "no_auc"  # best first for a loss
    assert names(lib.analyze([tmp_path], sort_by="backbone.width", ascending=False))[0] == "no_auc"


def test_sort_by_unknown_key_is_a_user_error(tmp_path):
    _sortable_tree(tmp_path)
    with pytest.raises(UserError, match="did you mean val_auc"):
        lib.analyze([tmp_path], sort_by="val_acu")


def test_sort_metric_is_added_to_requested_metrics(tmp_path):
    _sortable_tree(tmp_path)
    result = lib.analyze([tmp_path], metrics=["val_loss"], sort_by="val_auc")
    assert result.metrics == ["val_loss", "val_auc"]


def test_requested_metrics_and_unknown_metric(tmp_path):
    _sortable_tree(tmp_path)
    assert lib.analyze([tmp_path], metrics=["val_auc", "lr"]).metrics == ["val_auc", "lr"]
    with pytest.raises(UserError, match="--metric 'val_acc'"):
        lib.analyze([tmp_path], metrics=["val_acc"])


def test_only_changed_versus_all(tmp_path):
    make_run(tmp_path, "a", config(backbone__width=0.5), metrics=curves())
    make_run(tmp_path, "b", config(backbone__width=1.0), metrics=curves())
    changed = lib.analyze([tmp_path])
    everything = lib.analyze([tmp_path], only_changed=False)
    assert changed.keys == ["backbone.width"]
    assert everything.keys == ["backbone.name", "backbone.width", "backbone.weights",
                               "finetune.folds_count", "finetune.stages.0.epochs", "finetune.stages.0.lr"]
    assert "backbone.weights" in lib.render(everything, "table") and "null" in lib.render(everything, "table")


def test_filters_on_numbers_bools_globs_and_state(tmp_path):
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


def test_missing_folder_and_folder_without_experiments(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        lib.analyze([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no experiments found"):
        lib.analyze([tmp_path / "empty"])


# --- output formats --------------------------------------------------------------------------


@pytest.fixture
def two_configs(tmp_path):
    for seed in range(2):
        make_run(tmp_path, f"a.seed-{seed}", config(seed=seed), metrics=curves(start=0.5 + 0.1 * seed))
    make_run(tmp_path, "b", config(backbone__width=1.0, backbone__weights="imagenet"), metrics=curves(folds=1))
    make_run(tmp_path, "c", {k: v for k, v in config().items() if k != "backbone"}, metrics=curves())
    return lib.analyze([tmp_path], metrics=["val_auc", "val_loss"])


def test_table_format(two_configs):
    lines = lib.render(two_configs, "table", precision=3).splitlines()
    assert lines[0].split() == ["name", "stage", "state", "runs", "n", "backbone.name", "backbone.width",
                                "backbone.weights", "val_auc", "val_loss"]
    assert set(lines[1]) <= {"-", " "}
    a_row = next(line for line in lines if line.startswith("a.seed-*"))
    assert "0.755 ± 0.058" in a_row  # best val_auc per fold: 0.70, 0.71, 0.80, 0.81
    c_row = next(line for line in lines if line.startswith("c "))
    assert c_row.split()[5:8] == ["-", "-", "-"]  # keys the config lacks
    assert len({len(line) for line in lines[:2]}) == 1


def test_markdown_format(two_configs):
    text = lib.render(two_configs, "md", precision=2)
    assert text.rstrip().endswith(f"*{lib.CAPTIONS['kept']}*")
    lines = text.split("\n\n")[0].splitlines()
    assert lines[0].startswith("| name | stage | state | runs | n |")
    assert lines[1].startswith("| --- | --- | --- | ---: | ---: |")
    assert len(lines) == 2 + len(two_configs.rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert re.search(r"\| \d\.\d\d ± \d\.\d\d \|", lines[2])


def test_csv_format(two_configs):
    rows = list(csv.DictReader(io.StringIO(lib.render(two_configs, "csv"))))
    assert [row["name"] for row in rows] == ["a.seed-*", "b", "c"]
    a = rows[0]
    assert (a["runs"], a["n"], a["val_auc_n"]) == ("2", "4", "4")
    assert float(a["val_auc"]) == pytest.approx(0.755)
    assert float(a["val_auc_std"]) == pytest.approx(np.std([0.70, 0.71, 0.80, 0.81], ddof=1))
    assert a["names"] == "a.seed-0;a.seed-1"
    assert rows[1]["backbone.weights"] == "imagenet" and a["backbone.weights"] == "null"
    assert rows[2]["backbone.width"] == ""  # missing
    assert rows[1]["val_auc_std"] == ""


def test_json_format(two_configs):
    data = json.loads(lib.render(two_configs, "json"))
    assert data["keys"] == ["backbone.name", "backbone.width", "backbone.weights"]
    assert data["metrics"] == {"val_auc": "max", "val_loss": "min"}
    a, b, c = data["rows"]
    assert a["seeds"] == [0, 1] and a["n"] == 4 and a["names"] == ["a.seed-0", "a.seed-1"]
    assert a["config"]["backbone.weights"] is None
    assert a["metrics"]["val_auc"]["mean"] == pytest.approx(0.755)
    assert b["metrics"]["val_auc"]["std"] is None
    assert c["config"] == {}  # missing keys are absent, not null
    assert data["problems"] == []


def test_unknown_format_is_a_user_error(two_configs):
    with pytest.raises(UserError):
        lib.render(two_configs, "xml")


def test_precision_and_number_formatting():
    assert lib.format_number(0.123456, 3) == "0.123"
    assert lib.format_number(1.5e-6, 4) == "1.5e-06"
    assert lib.format_number(float("nan"), 4) == "-"
    assert [lib.format_value(v) for v in (True, None, [32, 32], lib.MISSING, 1e-4)] == [
        "true", "null", "[32, 32]", "-", "0.0001"]


# --- plot and import cost --------------------------------------------------------------------


def test_plot_writes_a_png(tmp_path):
    for seed in range(2):
        make_run(tmp_path / "exps", f"a.seed-{seed}", config(seed=seed), metrics=curves(epochs=5))
    frame = curves(epochs=4).assign(stage=lambda f: (f["epoch"] >= 2).astype(int))
    frame["epoch"] = frame["epoch"] % 2  # epochs restart per stage
    make_run(tmp_path / "exps", "staged", config(backbone__width=3.0), metrics=frame, state="interrupted")
    result = lib.analyze([tmp_path / "exps"])
    out = lib.plot(result, "val_auc", tmp_path / "plots" / "val_auc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="--plot 'nope'"):
        lib.plot(result, "nope", tmp_path / "x.png")


def test_import_is_light():
    code = "import sys, patchcfg.analyze; print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_overlapping_dirs_count_each_experiment_once(tmp_path):
    make_run(tmp_path / "sweep", "a", metrics=curves())
    make_run(tmp_path / "sweep", "b", config(backbone__width=2.0), metrics=curves())
    result = lib.analyze([tmp_path, tmp_path / "sweep"])
    assert sorted(len(row.runs) for row in result.rows) == [1, 1]
    assert sorted(row.name for row in result.rows) == ["sweep/a", "sweep/b"]


def test_a_stage_is_compared_only_on_the_settings_that_can_change_it(tmp_path):
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


# --- which figure: the kept model's, or the best epoch's ---------------------------------------


def test_default_figures_are_the_kept_models_and_best_epoch_is_an_option(tmp_path):
    """The distill log and summary.json report the kept student; analyze must show the same."""
    curves_ = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.5, 0.4, 0.45], "val_macro_auc": [0.99, 0.9995, 0.999]})
    make_run(tmp_path, "d", stage="distill", metrics=curves_,
             summary={"final": {"epoch": 3, "val_macro_auc": 0.999, "loss": 0.45}})
    kept = lib.analyze([tmp_path], stage="distill")
    assert kept.figures == "kept" and kept.rows[0].metrics["val_macro_auc"][0] == pytest.approx(0.999)
    best = lib.analyze([tmp_path], stage="distill", figures="best-epoch")
    assert best.rows[0].metrics["val_macro_auc"][0] == pytest.approx(0.9995)
    assert best.rows[0].metrics["loss"][0] == pytest.approx(0.4)
    assert lib.CAPTIONS["kept"] in lib.render(kept) and lib.CAPTIONS["best-epoch"] in lib.render(best)


def test_alignment_and_uniformity_are_ranked_as_the_training_loop_ranks_them(tmp_path):
    curves_ = pd.DataFrame({"epoch": [1, 2, 3], "align": [0.1439, 0.1267, 0.13],
                            "uniform": [-0.3662, -0.9395, -0.9]})
    make_run(tmp_path, "p", stage="pretrain", metrics=curves_)
    row = lib.analyze([tmp_path], figures="best-epoch").rows[0]
    assert row.metrics["align"][0] == pytest.approx(0.1267)
    assert row.metrics["uniform"][0] == pytest.approx(-0.9395)


def test_per_class_columns_only_on_request(tmp_path):
    summary = {"folds": {"0": {"val_macro_auc": 0.9, "val_auc_cat": 0.8, "val_f1_dog": 0.7, "val_loss": 0.3}}}
    make_run(tmp_path, "f", summary=summary)
    assert lib.analyze([tmp_path]).metrics == ["val_macro_auc", "val_loss"]
    assert lib.analyze([tmp_path], per_class=True).metrics == ["val_macro_auc", "val_auc_cat", "val_f1_dog",
                                                                 "val_loss"]


def test_output_groups_show_as_a_changed_key_and_their_metrics_as_columns(tmp_path):
    groups = [{"name": "digit", "classes": ["zero", "one"], "type": "softmax"}, {"name": "attr", "classes": "rest"}]
    make_run(tmp_path, "plain", config(), metrics=curves())
    make_run(tmp_path, "grouped", config(finetune__outputs=groups),
             metrics=curves(val_digit_accuracy=0.9, val_digit_macro_auc=0.95, val_accuracy_zero=0.9))
    result = lib.analyze([tmp_path])
    assert [k for k in result.keys if k.startswith("finetune.outputs")] == [
        "finetune.outputs.0.name", "finetune.outputs.0.classes", "finetune.outputs.0.type",
        "finetune.outputs.1.name", "finetune.outputs.1.classes"]
    assert {"val_digit_accuracy", "val_digit_macro_auc"} <= set(result.metrics)
    assert "val_accuracy_zero" not in result.metrics  # per class: only with per_class
    assert row_named(result, "grouped").metrics["val_digit_accuracy"][0] == pytest.approx(0.9)
    assert lib.metric_direction("val_digit_accuracy") == lib.metric_direction("val_digit_macro_auc") == "max"


def test_the_precision_a_run_computed_under_separates_it_from_the_same_config_elsewhere(tmp_path):
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
