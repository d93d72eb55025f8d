"""Fine-tuning: training phases (finetune.stages), folds, files, freezing, best weights, classes added later."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from patchcfg.cli import main
from patchcfg.config import load_config, with_defaults
from patchcfg.label_table import read_label_table
from patchcfg.stages import run_finetune
from patchcfg.tasks.finetune import build_model, phase_settings
from patchcfg.train.callbacks import BestWeights, CyclicLR

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_table, finetune_config):
    folder = tmp_path_factory.mktemp("ft")
    labels = digits_table(folder)
    config = load_config(finetune_config(folder, labels, folds_count=2))
    summary = run_finetune(config, root=folder / "experiments", verbose=0)
    return folder, config, summary


def test_folds_and_stages_write_their_files(trained):
    folder, config, summary = trained
    stage = folder / "experiments" / "ft" / "finetune"
    for fold in (0, 1):
        assert (stage / f"fold_{fold}" / "model.keras").is_file()
        assert (stage / f"roc_fold_{fold}.png").stat().st_size > 1000
    metrics = pd.read_csv(stage / "metrics.csv")
    assert sorted(set(zip(metrics["fold"], metrics["stage"], strict=True))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {"val_macro_auc", "val_loss", "val_auc_zero", "loss"} <= set(metrics.columns)
    predictions = pd.read_csv(stage / "predictions.csv")
    assert set(predictions["split"]) == {"oof", "validation"}
    oof = predictions[predictions["split"] == "oof"]
    assert len(oof) == 48 and oof["filepath"].is_unique  # every labelled training row once
    assert {"p_zero", "p_one", "y_zero", "y_one"} <= set(predictions.columns)
    assert predictions["y_one"].isna().any()  # unknown labels stay unknown
    saved = json.loads((stage / "summary.json").read_text())
    assert set(saved["folds"]) == {"0", "1"} and "val_macro_auc" in saved["mean"] and "val_macro_auc" in saved["std"]
    assert "val_macro_auc" in saved["holdout"]
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"


def _encoder_weights(config, path):
    model = build_model(config, {"name": "tiny"}, 2)
    model.load_weights(str(path))
    return model.get_layer("encoder").get_weights()


def test_frozen_stage_keeps_the_encoder_and_unfrozen_stage_changes_it(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    config = load_config(finetune_config(tmp_path, labels))
    keras.utils.set_random_seed(config["seed"] * 100)  # build_model inside the task uses this seed
    initial = build_model(config, {"name": "tiny"}, 2).get_layer("encoder").get_weights()
    run_finetune(config, root=tmp_path / "experiments", verbose=0)
    units = tmp_path / "experiments" / "ft" / "finetune" / "fold_0"
    after_frozen = _encoder_weights(config, units / "stage_0" / "best.weights.h5")
    after_unfrozen = _encoder_weights(config, units / "stage_1" / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(initial, after_frozen, strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(after_frozen, after_unfrozen, strict=True))


def test_next_stage_starts_from_the_best_weights(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    # stage 2 barely moves (lr 1e-12; frozen encoder so batch-norm statistics stay): it ends where it began
    stages = [{"epochs": 3, "lr": 0.05}, {"epochs": 1, "lr": 1e-12, "freeze_encoder": True}]
    config = load_config(finetune_config(tmp_path, labels, stages=stages))
    run_finetune(config, root=tmp_path / "experiments", verbose=0)
    units = tmp_path / "experiments" / "ft" / "finetune" / "fold_0"
    first = build_model(config, {"name": "tiny"}, 2)
    first.load_weights(str(units / "stage_0" / "best.weights.h5"))
    second = build_model(config, {"name": "tiny"}, 2)
    second.load_weights(str(units / "stage_1" / "best.weights.h5"))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_best_weights_callback_keeps_the_best_epoch():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = BestWeights("val_macro_auc", "max", None, None)
    callback.set_model(model)
    snapshots = []
    for epoch, value in enumerate([0.5, 0.9, 0.7]):
        model.set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
        snapshots.append(model.get_weights())
        callback.on_epoch_end(epoch, {"val_macro_auc": value})
    callback.restore()
    assert model.get_weights()[0][0, 0] == 1.0 and callback.best_epoch == 2


def test_cyclic_lr_modes():
    tri = CyclicLR(base_lr=0.1, max_lr=1.0, step_size=2)
    assert [round(tri.lr_at(s), 3) for s in range(5)] == [0.1, 0.55, 1.0, 0.55, 0.1]
    tri2 = CyclicLR(base_lr=0.0, max_lr=1.0, step_size=1, mode="triangular2")
    assert [tri2.lr_at(s) for s in (1, 3, 5)] == [1.0, 0.5, 0.25]
    exp = CyclicLR(base_lr=0.0, max_lr=1.0, step_size=1, mode="exp_range", gamma=0.5)
    assert exp.lr_at(1) == 0.5 and exp.lr_at(3) == 0.125


def test_phase_settings_follow_musket():
    finetune = with_defaults("finetune", {
        "stages": [{"epochs": 1}, {"epochs": 1, "unfreeze_encoder": True, "negatives": 2, "loss": "dice",
                                   "callbacks": {"CyclicLR": {}}}, {"epochs": 1}],
        "optimizer": {"lr": 0.3}, "loss": "masked_bce", "sampler": {"negatives": "real"},
        "callbacks": {"EarlyStopping": {}}})
    first, second, third = phase_settings(finetune, encoder_pretrained=True)
    assert first["frozen"] and not second["frozen"] and not third["frozen"]
    assert first["lr"] == 0.3 and second["loss"] == "dice" and second["negatives"] == 2
    assert first["callbacks"] == finetune["callbacks"] and second["callbacks"] == finetune["stages"][1]["callbacks"]
    assert list(first["callbacks"]) == ["EarlyStopping"] and list(second["callbacks"]) == ["CyclicLR"]
    assert not phase_settings(finetune, encoder_pretrained=False)[0]["frozen"]


def test_the_old_name_stage_settings_warns_and_gives_the_phases():
    from patchcfg.tasks.finetune import stage_settings

    finetune = with_defaults("finetune", {"stages": [{"epochs": 1}, {"epochs": 2}]})
    with pytest.warns(DeprecationWarning, match="phase_settings"):
        phases = stage_settings(finetune, encoder_pretrained=True)
    assert phases == phase_settings(finetune, encoder_pretrained=True)


def test_predict_with_tta_and_folds_is_the_mean_of_the_parts(trained):
    import tensorflow as tf

    from patchcfg.data.loading import load_images
    from patchcfg.tasks.predict import predict_images

    folder, config, _ = trained
    experiment = folder / "experiments" / "ft"
    images = [str(p) for p in sorted((folder / "img").glob("*.png"))[:10]]
    ensemble, _ = predict_images(experiment, images, tta="flips", folds="all")
    arrays = load_images(images, config["data"])
    parts = []
    for fold in (0, 1):
        model = keras.saving.load_model(experiment / "finetune" / f"fold_{fold}" / "model.keras")
        for view in (arrays, arrays[:, :, ::-1], arrays[:, ::-1], arrays[:, ::-1, ::-1]):
            parts.append(model(tf.constant(np.ascontiguousarray(view)), training=False).numpy())
    np.testing.assert_allclose(ensemble[["zero", "one"]].to_numpy(), np.mean(parts, axis=0), atol=1e-5)
    single, _ = predict_images(experiment, images, tta="none", folds="1")
    assert not np.allclose(single[["zero", "one"]].to_numpy(), ensemble[["zero", "one"]].to_numpy())


def test_predict_cli(trained, tmp_path):
    folder, _, _ = trained
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(main, ["predict", str(folder / "experiments" / "ft"), str(folder / "img"),
                                       "--out", str(out), "--tta", "flips_rot90", "--folds", "0"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["filepath", "zero", "one"] and len(frame) == 72
    result = CliRunner().invoke(main, ["predict", str(tmp_path), str(folder / "img"), "--out", str(out)])
    assert result.exit_code == 2 and "complete finetune stage" in result.output


def test_a_class_added_later_trains_without_touching_old_labels(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    table = read_label_table(labels)
    before = table.df[["filepath", "zero", "one"]].copy()
    table.add_class("two_like")
    table.df.loc[:20, "two_like"] = (np.arange(21) % 2).astype(float)
    table.write()
    again = read_label_table(labels)
    pd.testing.assert_frame_equal(again.df[["filepath", "zero", "one"]], before)
    config = load_config(finetune_config(tmp_path, labels, stages=[{"epochs": 1}]))
    summary = run_finetune(config, root=tmp_path / "experiments", verbose=0)
    assert summary["classes"] == ["zero", "one", "two_like"]
    assert "val_auc_two_like" in summary["folds"]["0"]


def test_finetune_cli_skips_a_complete_stage_and_needs_labels(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    path = finetune_config(tmp_path, labels, stages=[{"epochs": 1}])
    args = ["finetune", str(path), "--experiments", str(tmp_path / "exp")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "already complete" in result.output
    result = CliRunner().invoke(main, [*args, "data.labels=null", "name=other"])
    assert result.exit_code == 2 and "needs a label table" in result.output


def test_lr_find_writes_curve_and_suggestion(tmp_path, digits_table, finetune_config):
    from patchcfg.lr_find import smooth, suggest

    labels = digits_table(tmp_path)
    path = finetune_config(tmp_path, labels)
    out = tmp_path / "lrf"
    result = CliRunner().invoke(main, ["lr-find", str(path), "--steps", "30", "--start-lr", "1e-5", "--end-lr", "10",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "lr_find.csv")
    assert list(frame.columns) == ["lr", "loss", "smoothed", "derivative"] and len(frame) >= 11
    assert frame["lr"].is_monotonic_increasing and (out / "lr_find.png").stat().st_size > 1000
    assert "suggested lr" in result.output
    # the suggestion is where a made-up loss curve falls fastest
    lrs = np.logspace(-5, 0, 50)
    loss = 1 / (1 + np.exp(4 * (np.log10(lrs) + 2.5)))
    assert 10 ** -2.8 < suggest(lrs, smooth(loss, beta=0.0))[0] < 10 ** -2.2


def test_fixmatch_pseudo_labels_only_confident_entries(tmp_path, digits_table, finetune_config):
    import tensorflow as tf

    from patchcfg.losses import masked_bce
    from patchcfg.tasks.finetune import FinetuneTask

    labels = digits_table(tmp_path)
    config = load_config(finetune_config(tmp_path, labels, fixmatch={"enabled": True, "threshold": 0.9}))
    task = FinetuneTask(config=config, classes=["zero", "one"], encoder_spec={"name": "tiny"},
                        phase=phase_settings(config["finetune"], False)[0], train_paths=[], train_labels=np.zeros((0, 2)),
                        val_paths=[], val_labels=np.zeros((0, 2)), start_weights=None, seed=0)
    task.model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x)])
    weak = tf.constant([[0.95, 0.5], [0.02, 0.99]])
    strong = tf.constant([[0.7, 0.1], [0.3, 0.6]])
    loss, fraction = task.fixmatch_loss(weak, strong)
    expected = masked_bce(np.array([[1, -1], [0, 1]], np.float32), strong)
    assert float(loss) == pytest.approx(float(expected)) and float(fraction) == pytest.approx(0.75)


def test_fixmatch_pseudo_labels_a_softmax_group_by_its_most_likely_class():
    """A softmax group is not multi-hot: a confident row learns its one answer (the others 0),
    and an unsure row learns nothing of the group, whatever its single probabilities."""
    from patchcfg.models.outputs import OutputGroup
    from patchcfg.tasks.finetune import pseudo_labels

    groups = [OutputGroup("digit", ("a", "b", "c"), "softmax", None, 1.0, 0, 3),
              OutputGroup("flags", ("x",), "sigmoid", None, 1.0, 3, 4)]
    p = np.array([[0.96, 0.03, 0.01, 0.97],
                  [0.50, 0.45, 0.05, 0.02],
                  [0.02, 0.02, 0.96, 0.50]], np.float32)
    np.testing.assert_array_equal(pseudo_labels(p, groups, 0.95).numpy(),
                                  [[1, 0, 0, 1], [-1, -1, -1, 0], [0, 0, 1, -1]])


def test_fixmatch_trains_on_unlabelled_rows(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    frame = pd.read_csv(labels)
    frame.loc[frame.index % 2 == 1, ["zero", "one"]] = np.nan  # half the rows unlabelled
    frame.to_csv(labels, index=False)
    config = load_config(finetune_config(tmp_path, labels, stages=[{"epochs": 1}],
                                      fixmatch={"enabled": True, "threshold": 0.6, "mu": 1}))
    run_finetune(config, root=tmp_path / "experiments", verbose=0)
    metrics = pd.read_csv(tmp_path / "experiments" / "ft" / "finetune" / "metrics.csv")
    assert {"loss_unlabelled", "pseudo_label_fraction"} <= set(metrics.columns)


def test_unknown_monitored_metric_is_refused_before_training(tmp_path, digits_table, finetune_config):
    labels = digits_table(tmp_path)
    path = finetune_config(tmp_path, labels, primary_metric="val_macro_aux")
    result = CliRunner().invoke(main, ["finetune", str(path), "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 2 and "did you mean 'val_macro_auc'" in result.output
    assert not (tmp_path / "exp" / "ft" / "finetune").exists()


def test_interrupted_run_resumes_without_retraining_finished_units(tmp_path, digits_table, finetune_config,
                                                                    monkeypatch):
    from patchcfg.tasks.finetune import FinetuneTask

    labels = digits_table(tmp_path)
    config = load_config(finetune_config(tmp_path, labels))
    original = FinetuneTask.on_epoch_end

    def interrupt_in_phase_two(self, epoch, logs):
        if self.phase["index"] == 1:
            raise KeyboardInterrupt("SIGINT")
        return original(self, epoch, logs)

    monkeypatch.setattr(FinetuneTask, "on_epoch_end", interrupt_in_phase_two)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config, root=tmp_path / "experiments", verbose=0)
    stage = tmp_path / "experiments" / "ft" / "finetune"
    assert json.loads((stage / "status.json").read_text())["state"] == "interrupted"
    first_unit = (stage / "fold_0" / "stage_0" / "done.json").read_text()
    monkeypatch.setattr(FinetuneTask, "on_epoch_end", original)
    lines = []
    run_finetune(config, root=tmp_path / "experiments", verbose=1, log=lines.append)
    assert any("stage 1: already trained" in line for line in lines)
    assert (stage / "fold_0" / "stage_0" / "done.json").read_text() == first_unit
    assert json.loads((stage / "status.json").read_text())["state"] == "complete"


# --------------------------------------------------------------------------- output groups

GROUPS = [{"name": "attributes", "classes": ["even"]}, {"name": "digit", "classes": "rest", "type": "softmax"}]


@pytest.fixture(scope="module")
def grouped(tmp_path_factory, digits_table, finetune_config):
    """Digits 0/1/2: a softmax group zero/one/two and a sigmoid group even, in that model order
    (the table's order is zero, one, two, even); some labels unknown."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("groups")
    labels = digits_table(folder)
    digits = load_digits()
    target = digits.target[np.flatnonzero(digits.target < 3)[:72]]
    frame = pd.read_csv(labels)
    rows = np.arange(len(frame))
    frame["two"] = np.where(rows % 4 == 1, np.nan, (target == 2).astype(float))
    frame["even"] = np.where(rows % 3 == 2, np.nan, (target % 2 == 0).astype(float))
    frame.to_csv(labels, index=False)
    config = load_config(finetune_config(folder, labels, folds_count=2, outputs=GROUPS,
                                         primary_metric="val_digit_accuracy"))
    summary = run_finetune(config, root=folder / "experiments", verbose=0)
    return folder, config, summary, target


def test_groups_train_and_log_their_metrics(grouped):
    folder, _, summary, _ = grouped
    stage = folder / "experiments" / "ft" / "finetune"
    assert summary["classes"] == ["even", "zero", "one", "two"]
    assert summary["outputs"] == [{"name": "attributes", "classes": ["even"], "type": "sigmoid"},
                                  {"name": "digit", "classes": ["zero", "one", "two"], "type": "softmax"}]
    metrics = pd.read_csv(stage / "metrics.csv")
    assert {"val_digit_accuracy", "val_digit_macro_auc", "val_attributes_accuracy", "val_attributes_macro_auc",
            "val_auc_two", "val_macro_auc"} <= set(metrics.columns)
    assert 0 <= summary["mean"]["val_digit_accuracy"] <= 1 and "val_digit_accuracy" in summary["holdout"]


def test_the_saved_model_has_one_named_output_per_group(grouped):
    folder, config, _, _ = grouped
    model = keras.saving.load_model(folder / "experiments" / "ft" / "finetune" / "fold_0" / "model.keras")
    assert model.output_names == ["output_attributes", "output_digit"]
    attributes, digit = model(np.random.default_rng(0).random((5, 16, 16, 3), np.float32))
    assert attributes.shape == (5, 1) and digit.shape == (5, 3)
    np.testing.assert_allclose(np.sum(digit, axis=1), 1.0, atol=1e-5)


def test_predict_joins_the_groups_in_the_model_order(grouped):
    import tensorflow as tf

    from patchcfg.data.loading import load_images
    from patchcfg.tasks.predict import predict_images

    folder, config, _, _ = grouped
    experiment = folder / "experiments" / "ft"
    images = [str(folder / "img" / f"{i}.png") for i in range(72)]
    frame, _ = predict_images(experiment, images, folds="0")
    assert list(frame.columns) == ["filepath", "even", "zero", "one", "two"]
    model = keras.saving.load_model(experiment / "finetune" / "fold_0" / "model.keras")
    attributes, digit = model(tf.constant(load_images(images, config["data"])), training=False)
    np.testing.assert_allclose(frame[["even", "zero", "one", "two"]].to_numpy(),
                               np.concatenate([attributes, digit], axis=1), atol=1e-5)


def test_query_margin_reads_the_groups_and_the_table_order(grouped):
    from patchcfg.active.scores import margin
    from patchcfg.stages import run_query

    folder, config, _, _ = grouped
    query_config = load_config(folder / "ft.yaml", ["query.strategy=margin", "query.n=6", "query.subset=all"])
    summary = run_query(query_config, root=folder / "experiments", verbose=0)
    queue = pd.read_csv(summary["out"])
    p = queue[["p_zero", "p_one", "p_two", "p_even"]].to_numpy()
    digit = p[:, :3]
    top2 = -np.sort(-digit, axis=1)[:, :2]
    expected = np.maximum(1 - (top2[:, 0] - top2[:, 1]), 1 - np.abs(2 * p[:, 3] - 1))
    np.testing.assert_allclose(queue["score"], expected, rtol=1e-5)
    np.testing.assert_allclose(digit.sum(1), 1.0, atol=1e-4)  # the softmax group, in the table's columns
    assert not np.allclose(queue["score"], margin(p, False))


def test_a_model_file_tells_its_groups_by_its_named_outputs(grouped, tmp_path):
    from patchcfg.tasks.predict import output_groups

    folder, _, _, _ = grouped
    model_file = folder / "experiments" / "ft" / "finetune" / "fold_1" / "model.keras"
    groups = output_groups(model_file, None, [keras.saving.load_model(model_file)])
    assert [(g.name, g.type, g.start, g.stop) for g in groups] == [("attributes", "sigmoid", 0, 1),
                                                                    ("digit", "softmax", 1, 4)]
    from_summary = output_groups(folder / "experiments" / "ft", None)
    assert [(g.name, g.classes) for g in from_summary] == [("attributes", ("even",)),
                                                           ("digit", ("zero", "one", "two"))]


# --------------------------------------------------------------------------- crops

def test_crops_train_on_cells_that_never_cross_folds_and_predict_reduces_them(tmp_path, digits_table,
                                                                           finetune_config, monkeypatch):
    import yaml

    import patchcfg.stages.finetune as stage_module
    from patchcfg.data.crops import cell_files, load_cells, reduce
    from patchcfg.tasks.finetune import FinetuneTask
    from patchcfg.tasks.predict import predict_images

    labels = digits_table(tmp_path)
    path = finetune_config(tmp_path, labels, folds_count=2, stages=[{"epochs": 1, "lr": 0.01}])
    raw = yaml.safe_load(path.read_text())
    (tmp_path / "cells.csv").write_text("filepath,cell,zero\nimg/1.png,2,1\n")  # a cell's own label
    raw["data"].update(crops=2, crop_reduce="max", imshape=[8, 8], cell_labels=str(tmp_path / "cells.csv"))
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    seen = []
    original = FinetuneTask.__init__

    def record(self, **kwargs):
        seen.append((list(kwargs["train_paths"]), np.asarray(kwargs["train_labels"]), list(kwargs["val_paths"])))
        original(self, **kwargs)

    monkeypatch.setattr(FinetuneTask, "__init__", record)
    steps = []
    original_loop = stage_module.FinetuneStage.loop
    monkeypatch.setattr(stage_module.FinetuneStage, "loop",
                        lambda self, task, **kw: steps.append(kw["steps_per_epoch"]) or original_loop(self, task, **kw))
    config["finetune"]["steps_per_epoch"] = None  # the default: every training cell about once an epoch
    run_finetune(config, root=tmp_path / "experiments", verbose=0)
    gbs = config["finetune"]["batch_size"]
    assert steps == [-(-len(train) // gbs) for train, _, _ in seen]  # counts cells, not images
    table = read_label_table(labels)
    images = table.resolved_paths()
    cells = dict(zip(images, cell_files(images, config["data"], tmp_path / "experiments" / "ft" / "finetune"
                                        / "cells"), strict=True))
    image_of = {c: image for image, files in cells.items() for c in files}
    matrix = dict(zip(images, table.label_matrix(["zero", "one"]), strict=True))
    assert len(seen) == 2 and matrix[str(tmp_path / "img" / "1.png")][0] == 0  # the image: no zero
    assert sum(cells[str(tmp_path / "img" / "1.png")][2] in train for train, _, _ in seen) == 1
    for train_paths, train_labels, val_paths in seen:
        trained = [image_of[c] for c in train_paths]  # every training path is a cell of a known image
        assert not set(trained) & set(val_paths)  # no image has cells on both sides of a fold
        assert all(trained.count(image) == 4 for image in set(trained))  # ... nor some cells only
        expected = np.array([np.nan_to_num(matrix[i], nan=-1) for i in trained])
        for k, cell in enumerate(train_paths):
            if cell == cells[str(tmp_path / "img" / "1.png")][2]:
                expected[k, 0] = 1.0
        np.testing.assert_array_equal(train_labels, expected)
        assert train_labels.shape == (4 * len(set(trained)), 2)

    experiment = tmp_path / "experiments" / "ft"
    some = images[:6]
    frame, _ = predict_images(experiment, some, folds="0")
    model = keras.saving.load_model(experiment / "finetune" / "fold_0" / "model.keras")
    by_hand = reduce(model(load_cells(some, config["data"]), training=False).numpy(), 2, "max")
    np.testing.assert_allclose(frame[["zero", "one"]].to_numpy(), by_hand, atol=1e-5)
