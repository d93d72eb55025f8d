"""Distillation: the student learns the teacher's softened labels; validation labels never train."""

import json

import numpy as np
import pytest
import tensorflow as tf

from patchcfg.config import load_config
from patchcfg.distill import distillation_loss, logit
from patchcfg.stages import run_distill, run_finetune

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


def test_distill_stage_trains_a_student_beside_the_teacher(tmp_path, digits_table, finetune_config):
    import yaml

    labels = digits_table(tmp_path)
    path = finetune_config(tmp_path, labels, stages=[{"epochs": 2, "lr": 0.01}])
    raw = yaml.safe_load(path.read_text())
    raw["distill"] = {"student": {"name": "tiny", "width": 0.5}, "epochs": 2, "batch_size": 16,
                      "label_weight": 1.0, "temperature": 2.0}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    root = tmp_path / "experiments"
    run_finetune(config, root=root, verbose=0)
    summary = run_distill(config, root=root, verbose=0)
    stage = root / "ft" / "distill"
    assert (stage / "model.keras").is_file()
    saved = json.loads((stage / "summary.json").read_text())
    assert saved["images"] == 72 and "val_macro_auc" in saved["student"] and "val_macro_auc" in saved["teacher"]
    assert summary["teacher_minus_student_val_macro_auc"] == pytest.approx(
        saved["teacher"]["val_macro_auc"] - saved["student"]["val_macro_auc"])
    assert run_distill(config, root=root, verbose=0) == saved  # complete: skipped
