"""Learning-rate schedules, LARS, and optimizers built from config sections."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from patchcfg.train.optim import (  # noqa: E402
    LARS,
    Constant,
    Cosine,
    Staircase,
    WarmupCosine,
    build_optimizer,
    build_schedule,
)


def values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_schedules_by_hand():
    assert values(Constant(0.5), [0, 10, 1000]) == pytest.approx([0.5, 0.5, 0.5])
    assert values(Cosine(1.0, total_steps=10), [0, 5, 10, 20]) == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-6)
    assert values(Cosine(2.0, 10, final_ratio=0.5), [0, 5, 10]) == pytest.approx([2.0, 1.5, 1.0], abs=1e-6)
    warm = WarmupCosine(1.0, warmup_steps=4, total_steps=14)
    assert values(warm, [0, 1, 3, 4, 9, 14]) == pytest.approx([0.25, 0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-6)
    assert values(Staircase(1.0, decay_steps=3, decay_rate=0.1), [0, 2, 3, 6]) == pytest.approx([1, 1, 0.1, 0.01])


def test_schedule_from_config_counts_epochs_in_steps():
    schedule = build_schedule({"lr": 0.1, "schedule": "warmup_cosine", "warmup_epochs": 2}, steps_per_epoch=5, epochs=10)
    assert isinstance(schedule, WarmupCosine) and schedule.warmup_steps == 10 and schedule.total_steps == 50
    staircase = build_schedule({"lr": 0.1, "schedule": "staircase", "decay_epochs": 3, "decay_rate": 0.5}, 4, 10)
    assert staircase.decay_steps == 12


@pytest.mark.parametrize("schedule", [Constant(0.1), Cosine(0.1, 100, 0.1), WarmupCosine(0.1, 5, 100),
                                      Staircase(0.1, 7, 0.3)])
def test_schedules_serialize(schedule):
    config = keras.optimizers.schedules.serialize(schedule)
    again = keras.optimizers.schedules.deserialize(config)
    assert type(again) is type(schedule)
    assert values(again, [0, 3, 50]) == pytest.approx(values(schedule, [0, 3, 50]))
    optimizer = keras.optimizers.SGD(schedule)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored._learning_rate) is type(schedule)


def test_lars_step_by_hand():
    """You et al. 2017: g' = g + wd*w; lr_w = lr * eta * ||w|| / ||g'||; m = mu*m + lr_w*g'; w -= m.
    Biases (rank 1) get plain momentum SGD: no trust ratio, no decay."""
    kernel = keras.Variable(np.array([[3.0, 4.0]], "float32"))
    bias = keras.Variable(np.array([1.0], "float32"))
    opt = LARS(learning_rate=0.3, momentum=0.9, weight_decay_rate=0.1, trust_coefficient=1.0)
    opt.build([kernel, bias])
    opt.apply([np.array([[0.6, 0.8]], "float32"), np.array([0.5], "float32")], [kernel, bias])
    # g' = [0.9, 1.2] (norm 1.5), ||w|| = 5 -> lr_w = 0.3 * 5 / 1.5 = 1.0; w = [3, 4] - [0.9, 1.2]
    np.testing.assert_allclose(kernel.numpy(), [[2.1, 2.8]], rtol=1e-6)
    np.testing.assert_allclose(bias.numpy(), [1.0 - 0.3 * 0.5], rtol=1e-6)
    # second step: momentum carries 0.9 * previous update
    opt.apply([np.zeros((1, 2), "float32"), np.zeros(1, "float32")], [kernel, bias])
    w = np.array([2.1, 2.8])
    g = 0.1 * w
    lr_w = 0.3 * np.linalg.norm(w) / np.linalg.norm(g)
    expected = w - (0.9 * np.array([0.9, 1.2]) + lr_w * g)
    np.testing.assert_allclose(kernel.numpy()[0], expected, rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), [0.85 - 0.9 * 0.15], rtol=1e-6)


def test_lars_serializes():
    opt = LARS(learning_rate=Cosine(0.2, 10), momentum=0.8, weight_decay_rate=1e-4, trust_coefficient=0.002)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, LARS)
    assert (again.momentum, again.weight_decay_rate, again.trust_coefficient) == (0.8, 1e-4, 0.002)


@pytest.mark.parametrize("name,cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"), ("lars", "LARS")])
def test_build_optimizer_by_name(name, cls):
    opt = build_optimizer({"name": name, "lr": 0.01, "momentum": 0.5, "nesterov": True}, 10, 2)
    assert type(opt).__name__ == cls
    if name == "sgd":
        assert opt.momentum == 0.5 and opt.nesterov


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_weight_decay_skips_biases_and_norm_parameters(name):
    kernel = keras.Variable(np.ones((2, 2), "float32"))
    bias = keras.Variable(np.ones(2, "float32"))
    opt = build_optimizer({"name": name, "lr": 0.1, "weight_decay": 0.5, "momentum": 0.0}, 1, 1, [kernel, bias])
    opt.apply([np.zeros((2, 2), "float32"), np.zeros(2, "float32")], [kernel, bias])
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.1 * 0.5, rtol=1e-5)  # decoupled: w -= lr * wd * w
    np.testing.assert_allclose(bias.numpy(), 1.0)


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        build_optimizer({"name": "rmsprop"}, 1, 1)
    with pytest.raises(ValueError):
        build_schedule({"schedule": "exponential"}, 1, 1)
    assert math.isfinite(float(WarmupCosine(1.0, 0, 10)(3)))


def test_constant_learning_rate_can_be_changed_by_callbacks():
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "schedule": "constant"}, 10, 2)
    opt.learning_rate = 0.01  # what ReduceLROnPlateau does
    assert float(opt.learning_rate) == pytest.approx(0.01)
