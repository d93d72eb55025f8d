"""patchcfg.analyze.figures: metric directions, best and last epochs, summary.json, the metrics shown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchcfg import analyze as lib
from patchcfg.errors import UserError


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


def test_best_epoch_is_taken_over_the_last_fine_tuning_stage(tmp_path, make_run):
    frame = pd.DataFrame({
        "epoch": [0, 1, 2, 3], "stage": [0, 0, 1, 1], "val_auc": [0.99, 0.98, 0.7, 0.8],
    })
    make_run(tmp_path, "staged", metrics=frame)
    row = lib.analyze([tmp_path]).rows[0]
    assert row.metrics["val_auc"][0] == pytest.approx(0.8)
    assert row.n == 1


def test_summary_json_is_the_fallback_without_metrics_csv(tmp_path, config, make_run, row_named):
    summary = {"folds": {"0": {"best": {"val_auc": 0.8}}, "1": {"val_auc": 0.9}},
               "mean": {"val_auc": 0.85}, "std": {"val_auc": 0.05}}
    make_run(tmp_path, "summary_only", summary=summary)
    make_run(tmp_path, "plain", config(backbone__width=2.0), summary={"best": {"val_auc": 0.7}, "final": {}})
    result = lib.analyze([tmp_path])
    assert row_named(result, "summary_only").metrics["val_auc"][:1] == pytest.approx((0.85,))
    assert row_named(result, "summary_only").n == 2
    mean, std, count = row_named(result, "plain").metrics["val_auc"]
    assert (mean, count) == (pytest.approx(0.7), 1) and np.isnan(std)


def test_csv_fast_path_matches_file_by_file_reading(tmp_path, config, curves, make_run, row_named):
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


def test_sort_metric_is_added_to_requested_metrics(tmp_path, sortable_tree):
    sortable_tree(tmp_path)
    result = lib.analyze([tmp_path], metrics=["val_loss"], sort_by="val_auc")
    assert result.metrics == ["val_loss", "val_auc"]


def test_requested_metrics_and_unknown_metric(tmp_path, sortable_tree):
    sortable_tree(tmp_path)
    assert lib.analyze([tmp_path], metrics=["val_auc", "lr"]).metrics == ["val_auc", "lr"]
    with pytest.raises(UserError, match="--metric 'val_acc'"):
        lib.analyze([tmp_path], metrics=["val_acc"])


def test_default_figures_are_the_kept_models_and_best_epoch_is_an_option(tmp_path, make_run):
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


def test_alignment_and_uniformity_are_ranked_as_the_training_loop_ranks_them(tmp_path, make_run):
    curves_ = pd.DataFrame({"epoch": [1, 2, 3], "align": [0.1439, 0.1267, 0.13],
                            "uniform": [-0.3662, -0.9395, -0.9]})
    make_run(tmp_path, "p", stage="pretrain", metrics=curves_)
    row = lib.analyze([tmp_path], figures="best-epoch").rows[0]
    assert row.metrics["align"][0] == pytest.approx(0.1267)
    assert row.metrics["uniform"][0] == pytest.approx(-0.9395)


def test_per_class_columns_only_on_request(tmp_path, make_run):
    summary = {"folds": {"0": {"val_macro_auc": 0.9, "val_auc_cat": 0.8, "val_f1_dog": 0.7, "val_loss": 0.3}}}
    make_run(tmp_path, "f", summary=summary)
    assert lib.analyze([tmp_path]).metrics == ["val_macro_auc", "val_loss"]
    assert lib.analyze([tmp_path], per_class=True).metrics == ["val_macro_auc", "val_auc_cat", "val_f1_dog",
                                                                 "val_loss"]
