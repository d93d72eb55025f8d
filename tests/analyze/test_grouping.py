"""patchcfg.analyze.grouping: runs grouped into rows, the keys that differ, sorting."""

from __future__ import annotations

import numpy as np
import pytest

from patchcfg import analyze as lib
from patchcfg.errors import UserError


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


def test_runs_differing_only_in_seed_are_one_row_with_n_folds_times_seeds(
        tmp_path, config, curves, make_run, row_named):
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


def test_failed_and_running_runs_are_their_own_rows(tmp_path, config, curves, make_run):
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


def test_sort_ascending_and_descending_with_missing_last(tmp_path, sortable_tree):
    sortable_tree(tmp_path)
    names = lambda result: [row.name for row in result.rows]  # noqa: E731
    assert names(lib.analyze([tmp_path], sort_by="val_auc", ascending=True)) == ["r0", "r2", "r1", "no_auc"]
    assert names(lib.analyze([tmp_path], sort_by="val_auc", ascending=False)) == ["r1", "r2", "r0", "no_auc"]
    assert names(lib.analyze([tmp_path], sort_by="val_auc"))[0] == "r1"  # best first for a max metric
    assert names(lib.analyze([tmp_path], sort_by="val_loss"))[0] == "no_auc"  # best first for a loss
    assert names(lib.analyze([tmp_path], sort_by="backbone.width", ascending=False))[0] == "no_auc"


def test_sort_by_unknown_key_is_a_user_error(tmp_path, sortable_tree):
    sortable_tree(tmp_path)
    with pytest.raises(UserError, match="did you mean val_auc"):
        lib.analyze([tmp_path], sort_by="val_acu")


def test_only_changed_versus_all(tmp_path, config, curves, make_run):
    make_run(tmp_path, "a", config(backbone__width=0.5), metrics=curves())
    make_run(tmp_path, "b", config(backbone__width=1.0), metrics=curves())
    changed = lib.analyze([tmp_path])
    everything = lib.analyze([tmp_path], only_changed=False)
    assert changed.keys == ["backbone.width"]
    assert everything.keys == ["backbone.name", "backbone.width", "backbone.weights",
                               "finetune.folds_count", "finetune.stages.0.epochs", "finetune.stages.0.lr"]
    assert "backbone.weights" in lib.render(everything, "table") and "null" in lib.render(everything, "table")


def test_output_groups_show_as_a_changed_key_and_their_metrics_as_columns(
        tmp_path, config, curves, make_run, row_named):
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
