"""Masked multi-hot losses: unknown entries contribute exactly nothing; expressions parse safely."""

import numpy as np
import pytest
import tensorflow as tf

from patchcfg.errors import ConfigError
from patchcfg.losses import Term, build_loss, dice, masked_bce, masked_cce, masked_focal, parse_loss

Y = np.array([[1, 0, -1], [-1, 1, 0]], np.float32)
P = np.array([[0.8, 0.3, 0.6], [0.1, 0.7, 0.2]], np.float32)


@pytest.mark.parametrize("loss", [masked_bce, masked_focal, dice, build_loss("masked_bce+0.1*dice"),
                                  build_loss("0.5*masked_focal(gamma=3, alpha=0.25)")])
def test_unknown_entries_have_zero_loss_and_zero_gradient(loss):
    pred = tf.Variable(P)
    with tf.GradientTape() as tape:
        value = loss(Y, pred)
    grad = tape.gradient(value, pred).numpy()
    assert np.all(grad[Y < 0] == 0.0)
    assert np.all(grad[Y >= 0] != 0.0)
    # whatever the prediction on an unknown entry, the loss is the same
    changed = P.copy()
    changed[Y < 0] = [0.99, 0.01]
    assert float(loss(Y, changed)) == pytest.approx(float(value), abs=1e-6)


def test_masked_bce_equals_keras_bce_on_known_entries():
    known = Y >= 0
    expected = tf.keras.losses.binary_crossentropy(Y[known][None], P[known][None])
    assert float(masked_bce(Y, P)) == pytest.approx(float(expected[0]), rel=1e-5)


def test_focal_with_gamma_zero_is_bce_and_down_weights_easy_examples():
    assert float(masked_focal(Y, P, gamma=0.0)) == pytest.approx(float(masked_bce(Y, P)), rel=1e-6)
    easy = np.array([[1.0]], np.float32), np.array([[0.95]], np.float32)
    assert float(masked_focal(*easy)) < 0.01 * float(masked_bce(*easy))


def test_dice_is_zero_for_perfect_predictions_and_label_smoothing_changes_bce():
    y = np.array([[1, 0, -1], [-1, 1, 1]], np.float32)
    perfect = np.where(y < 0, 0.5, y).astype(np.float32)
    assert float(dice(y, perfect, smooth=1e-6)) == pytest.approx(0.0, abs=1e-4)
    assert float(dice(y, 1.0 - perfect)) > 0.5
    assert float(masked_bce(Y, P, label_smoothing=0.1)) != pytest.approx(float(masked_bce(Y, P)))


def test_masked_cce_ignores_rows_with_unknowns():
    y = np.array([[0, 1, 0], [1, -1, 0]], np.float32)
    p = np.array([[0.1, 0.8, 0.1], [0.2, 0.5, 0.3]], np.float32)
    assert float(masked_cce(y, p)) == pytest.approx(-np.log(0.8), rel=1e-5)


def test_parse_expressions():
    assert parse_loss("masked_bce+0.1*dice") == [Term(1.0, "masked_bce"), Term(0.1, "dice")]
    assert parse_loss("binary_crossentropy + dice_loss*0.5 - 2*focal(gamma=1.5, alpha=-0.1)") == [
        Term(1.0, "binary_crossentropy"), Term(0.5, "dice_loss"),
        Term(-2.0, "focal", (("gamma", 1.5), ("alpha", -0.1)))]
    assert parse_loss("mypkg.losses:weird") == [Term(1.0, "mypkg.losses:weird")]


@pytest.mark.parametrize("text, message", [
    ("masked_bce+", "expected name"),
    ("masked_bce; import os", "cannot read"),
    ("__import__('os')", "cannot read|expected"),
    ("0.1*", "expected name"),
    ("masked_bce*dice", "expected number"),
])
def test_bad_expressions_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(text)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'masked_bce'"):
        build_loss("masked_bc")


def test_user_loss_from_module(tmp_path, monkeypatch):
    (tmp_path / "myloss.py").write_text("def half(y_true, y_pred):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert float(build_loss("myloss:half+masked_bce")(Y, P)) == pytest.approx(0.5 + float(masked_bce(Y, P)))


def _digit_and_attribute_groups():
    from patchcfg.config import with_defaults
    from patchcfg.models.outputs import resolve_groups

    finetune = with_defaults("finetune", {"outputs": [{"name": "digit", "classes": ["zero", "one", "two"],
                                                       "type": "softmax"}, {"name": "attributes", "classes": "rest"}]})
    return resolve_groups(finetune, ["zero", "one", "two", "even", "loop"])


def _loss_and_gradient(fn, y, p):
    import tensorflow as tf

    p = tf.Variable(np.asarray(p, np.float32))
    with tf.GradientTape() as tape:
        loss = fn(tf.constant(y, tf.float32), p)
    return float(loss), tape.gradient(loss, p).numpy()


def test_softmax_group_loss_and_gradient_are_zero_on_rows_that_do_not_resolve_it():
    from patchcfg.losses import build_group_loss

    fn = build_group_loss(_digit_and_attribute_groups(), "masked_bce")
    unresolved = np.array([[-1, 0, -1, -1, -1], [1, 1, -1, -1, -1], [0, 0, 0, -1, -1], [-1, -1, -1, -1, -1]])
    probs = np.array([[0.2, 0.5, 0.3, 0.6, 0.4]] * 4)
    loss, grad = _loss_and_gradient(fn, unresolved, probs)
    assert loss == 0.0 and np.all(grad == 0.0)
    # the same rows next to one that resolves the group: the gradient stays zero on them
    _, grad = _loss_and_gradient(fn, np.vstack([unresolved, [[-1, 0, 0, -1, -1]]]), np.vstack([probs, probs[:1]]))
    assert np.all(grad[:4] == 0.0) and np.any(grad[4, :3] != 0.0)


def test_one_digit_present_trains_the_digit_group_and_leaves_sigmoid_unknowns_alone():
    from patchcfg.losses import build_group_loss, masked_cce

    fn = build_group_loss(_digit_and_attribute_groups(), "masked_bce")
    y = np.array([[0, 1, -1, -1, 1]], np.float32)  # "one" present; two unknown; even unknown; loop present
    p = np.array([[0.2, 0.5, 0.3, 0.6, 0.4]], np.float32)
    loss, grad = _loss_and_gradient(fn, y, p)
    expected = float(masked_cce(np.array([[0, 1, 0]], np.float32), p[:, :3])) - np.log(0.4)  # cce + BCE on loop
    assert loss == pytest.approx(expected, rel=1e-5)
    assert grad[0, 1] < 0  # the digit group learns "one" (unknown "two" counts as absent)
    assert grad[0, 3] == 0.0 and grad[0, 4] < 0  # the sigmoid group: "even" unknown untouched, "loop" trained


def test_group_weights_and_losses_add_up():
    from dataclasses import replace

    from patchcfg.losses import build_group_loss, masked_bce, masked_cce

    digit, attributes = _digit_and_attribute_groups()
    fn = build_group_loss([replace(digit, weight=0.5), replace(attributes, loss="masked_focal")], "masked_bce")
    y = np.array([[1, -1, -1, 0, 1], [-1, 0, 0, 1, -1]], np.float32)
    p = np.array([[0.7, 0.2, 0.1, 0.3, 0.8], [0.1, 0.1, 0.8, 0.6, 0.5]], np.float32)
    resolved = np.array([[1, 0, 0], [1, 0, 0]], np.float32)  # [-1, 0, 0]: all absent but "zero"
    expected = 0.5 * float(masked_cce(resolved, p[:, :3])) + float(masked_focal(y[:, 3:], p[:, 3:]))
    assert float(fn(y, p)) == pytest.approx(expected, rel=1e-5)
    plain = build_group_loss(_plain_group(), "masked_bce")
    assert float(plain(y, p)) == pytest.approx(float(masked_bce(y, p)), rel=1e-6)


def _plain_group():
    from patchcfg.config import with_defaults
    from patchcfg.models.outputs import resolve_groups

    return resolve_groups(with_defaults("finetune", {}), ["zero", "one", "two", "even", "loop"])
