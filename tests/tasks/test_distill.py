"""Distillation: the student learns the teacher's softened labels; validation labels never train."""

import json

import numpy as np
import pytest
import tensorflow as tf

from patchcfg.config import load_config
from patchcfg.stages import run_distill, run_finetune
from patchcfg.tasks.distill import distillation_loss, logit

pytestmark = pytest.mark.slow


def test_distillation_loss_is_minimal_when_the_student_matches_the_teacher():
    teacher = tf.constant([[2.0, -1.0], [0.5, 3.0]])
    same = float(distillation_loss(teacher, teacher, 2.0))
    other = float(distillation_loss(teacher, -teacher, 2.0))
    assert same < other
    # at T the gradient vanishes where the student equals the teacher
    student = tf.Variable(teacher)
    with tf.GradientTape() as tape:
        loss = distillation_loss(teacher, student, 3.0)
    np.testing.assert_allclose(tape.gradient(loss, student).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(logit([0.5, 0.880797]), [0.0, 2.0], atol=1e-4)


def _teacher_and_student(tmp_path, labels, finetune_config, epochs, data=None, **finetune):
    """Fine-tune a teacher on ``labels``, then distill a tiny student: (config, root, summary)."""
    import yaml

    path = finetune_config(tmp_path, labels, stages=[{"epochs": epochs, "lr": 0.01}], **finetune)
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(data or {})
    raw["distill"] = {"student": {"name": "tiny", "width": 0.5}, "epochs": epochs, "batch_size": 16,
                      "label_weight": 1.0, "temperature": 2.0}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    root = tmp_path / "experiments"
    run_finetune(config, root=root, verbose=0)
    return config, root, run_distill(config, root=root, verbose=0)


def test_distill_stage_trains_a_student_beside_the_teacher(tmp_path, digits_table, finetune_config):
    config, root, summary = _teacher_and_student(tmp_path, digits_table(tmp_path), finetune_config, 2)
    stage = root / "ft" / "distill"
    assert (stage / "model.keras").is_file()
    saved = json.loads((stage / "summary.json").read_text())
    assert saved["images"] == 72 and "val_macro_auc" in saved["student"] and "val_macro_auc" in saved["teacher"]
    assert summary["teacher_minus_student_val_macro_auc"] == pytest.approx(
        saved["teacher"]["val_macro_auc"] - saved["student"]["val_macro_auc"])
    assert run_distill(config, root=root, verbose=0) == saved  # complete: skipped


def test_softmax_group_distillation_is_the_tempered_cross_entropy():
    from patchcfg.config import with_defaults
    from patchcfg.models.outputs import resolve_groups
    from patchcfg.tasks.distill import group_distillation_loss, softmax_distillation_loss, teacher_logits

    groups = resolve_groups(with_defaults("finetune", {"outputs": [
        {"name": "digit", "classes": ["zero", "one", "two"], "type": "softmax"}, {"name": "even", "classes": "rest"}]}),
        ["zero", "one", "two", "even"])
    p = np.array([[0.7, 0.2, 0.1, 0.9], [0.1, 0.1, 0.8, 0.3]], np.float32)
    z = teacher_logits(p, groups)
    np.testing.assert_allclose(tf.nn.softmax(z[:, :3]).numpy(), p[:, :3], atol=1e-6)  # log p: softmax gives p back
    np.testing.assert_allclose(z[:, 3], logit(p[:, 3]), atol=1e-6)
    student = tf.constant(np.random.default_rng(0).normal(size=(2, 4)), tf.float32)
    expected = (float(softmax_distillation_loss(z[:, :3], student[:, :3], 2.0))
                + float(distillation_loss(z[:, 3:], student[:, 3:], 2.0)))
    assert float(group_distillation_loss(groups, z, student, 2.0)) == pytest.approx(expected, rel=1e-6)
    target = tf.nn.softmax(z[:, :3] / 2.0)
    by_hand = -np.mean(np.sum(target * tf.nn.log_softmax(student[:, :3] / 2.0), axis=1)) * 4.0
    assert float(softmax_distillation_loss(z[:, :3], student[:, :3], 2.0)) == pytest.approx(by_hand, rel=1e-5)


def test_distill_keeps_the_teachers_groups(tmp_path, digits_table, finetune_config):
    import keras
    import pandas as pd

    labels = digits_table(tmp_path)
    frame = pd.read_csv(labels)
    frame["two"] = ((frame["zero"] == 0) & (frame["one"] == 0)).astype(float)
    frame.to_csv(labels, index=False)
    _, root, summary = _teacher_and_student(
        tmp_path, labels, finetune_config, 1,
        outputs=[{"name": "digit", "classes": ["zero", "one", "two"], "type": "softmax"}])
    assert "val_digit_accuracy" in summary["student"] and "val_digit_accuracy" in summary["teacher"]
    student = keras.saving.load_model(root / "ft" / "distill" / "model.keras")
    out = student(np.random.default_rng(0).random((3, 16, 16, 3), np.float32))
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, atol=1e-5)  # one softmax group, as the teacher


def test_distill_with_crops_learns_the_teachers_cells(tmp_path, digits_table, finetune_config):
    _, root, summary = _teacher_and_student(tmp_path, digits_table(tmp_path), finetune_config, 1,
                                            data={"crops": 2, "imshape": [8, 8]})
    assert summary["images"] == 72 and len(list((root / "ft" / "distill" / "cells").glob("*.npy"))) == 4 * 72
    assert np.isfinite(summary["student"]["val_macro_auc"]) and np.isfinite(summary["teacher"]["val_macro_auc"])
