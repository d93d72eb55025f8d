"""The momentum encoder: an EMA of the online networks' trainable weights, on a schedule, checkpointed."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from patchcfg.pretrain import momentum  # noqa: E402
from patchcfg.pretrain.momentum import MomentumEncoder, cosine_momentum  # noqa: E402


def network(name):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x), name=name)


def test_targets_start_as_copies_and_follow_the_trainable_weights():
    keras.utils.set_random_seed(0)
    online = network("online")
    ema = MomentumEncoder({"key_encoder": online}, momentum=0.9)
    target = ema.targets["key_encoder"]
    assert target is not online
    for a, b in zip(target.get_weights(), online.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    before = [w.numpy().copy() for w in target.weights]
    for w in online.weights:
        w.assign(w + 1.0)
    ema.update(step=tf.constant(1))
    for old, new, live in zip(before, target.weights, online.weights, strict=True):
        if live.trainable:   # theta_t <- 0.9 theta_t + 0.1 theta_o
            np.testing.assert_allclose(new.numpy(), 0.9 * old + 0.1 * live.numpy(), rtol=1e-6)
        else:                # batch-norm statistics are the target's own
            np.testing.assert_array_equal(new.numpy(), old)
    assert ema.state() == {"key_encoder": target}
    out = ema(tf.ones((2, 3)))
    assert out.dtype == tf.float32 and out.shape == (2, 4)


def test_a_schedule_sets_the_momentum_of_each_step():
    online = network("online")
    ema = MomentumEncoder({"t": online}, momentum=0.5, schedule=lambda step: 1.0 if int(step) > 0 else 0.0)
    assert ema.momentum_at(0) == 0.0 and ema.momentum_at(3) == 1.0
    for w in online.trainable_weights:
        w.assign(w + 1.0)
    ema.update(step=5)  # momentum 1: the target does not move
    assert not np.allclose(ema.targets["t"].get_weights()[0], online.get_weights()[0])
    ema.update(step=0)  # momentum 0: the target becomes the online network
    np.testing.assert_allclose(ema.targets["t"].get_weights()[0], online.get_weights()[0])
    assert MomentumEncoder({"t": online}, momentum=0.5).momentum_at(10) == 0.5


def test_cosine_schedule_rises_from_the_base_to_one():
    schedule = cosine_momentum(0.996, 1000)
    values = [float(schedule(k)) for k in range(0, 1001, 100)]
    assert values[0] == pytest.approx(0.996) and values[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert float(schedule(5000)) == pytest.approx(1.0)
    assert doctest.testmod(momentum).failed == 0


@pytest.mark.parametrize("name", ["byol", "detcon_b"])
def test_byol_target_momentum_follows_the_cosine_schedule_over_the_run(name):
    """tau_base at step 0, halfway to 1 in the middle of the run, 1 at its end (Grill et al. 2020)."""
    from patchcfg.config.schema import fill_defaults
    from patchcfg.pretrain import get_method

    config = fill_defaults({"name": "x", "data": {"images": "x.txt", "imshape": [16, 16]},
                            "backbone": {"name": "tiny"},
                            "pretrain": {"method": name, "epochs": 4, "batch_size": 8}})
    method = get_method(name)(config, [f"{i}.png" for i in range(80)])
    assert method.params.tau_base == 0.996  # the paper's, from the schema
    assert method.total_steps() == 40       # 4 epochs of 80 // 8 steps
    method.steps_per_epoch = 5              # as the loop sets it: K = 4 x 5 steps
    assert method.total_steps() == 20
    assert float(method.tau_at(0)) == pytest.approx(0.996, abs=1e-7)
    assert float(method.tau_at(10)) == pytest.approx(0.998, abs=1e-7)   # 1 - 0.004 (cos(pi/2) + 1) / 2
    assert float(method.tau_at(5)) == pytest.approx(1 - 0.004 * (np.cos(np.pi / 4) + 1) / 2, abs=1e-7)
    assert float(method.tau_at(20)) == pytest.approx(1.0, abs=1e-7)
    assert float(method.tau_at(25)) == pytest.approx(1.0, abs=1e-7)     # past the end it stays 1
