"""The fused batch normalization is Keras' layer: same outputs, gradients, moving statistics, saving."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from patchcfg.models.layers import BatchNormalization  # noqa: E402


def pair(shape, **kwargs):
    """The two layers, built alike, with the same (non-trivial) weights and statistics."""
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for layer in (ours, theirs):
        layer.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(1.0, 0.3, w.shape).astype("float32") for w in theirs.get_weights()]
    weights[-1] = np.abs(weights[-1])  # a variance
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (8, 7)])
def test_training_step_matches_keras(shape):
    ours, theirs = pair(shape, momentum=0.9, epsilon=1e-5)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32"))
    assert ours._fused(x, None)  # the fused kernel, not Keras' path
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(tf.size(y), dtype=tf.float32)[: y.shape[-1]] if len(shape) == 2
                                 else y * y[..., :1])
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in layer.non_trainable_variables]))
    (y1, g1, s1), (y2, g2, s2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1 + s1, g2 + s2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (8, 7)])
def test_inference_and_frozen_layers_use_the_moving_statistics(shape):
    ours, theirs = pair(shape)
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), rtol=1e-5, atol=1e-5)
    ours.trainable = theirs.trainable = False
    before = [w.numpy() for w in ours.non_trainable_variables]
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), rtol=1e-5, atol=1e-5)
    for a, b in zip(before, ours.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


def test_synchronized_and_other_dtypes_take_keras_path():
    layer = BatchNormalization(synchronized=True)
    assert not layer._fused(tf.zeros((2, 3, 3, 4)), None)
    assert not BatchNormalization()._fused(tf.zeros((2, 3, 3, 4), tf.float64), None)
    assert BatchNormalization()._fused(tf.zeros((2, 3, 3, 4)), None)


def test_bfloat16_inputs_of_the_mixed_policy_match_keras_on_the_fused_kernel():
    """Under ``mixed_bfloat16`` the statistics stay float32 and the output is bfloat16, as Keras'."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ours, theirs = pair((6, 5, 4, 3), momentum=0.9, epsilon=1e-5)
    finally:
        keras.config.set_dtype_policy(previous)
    x = tf.cast(np.random.default_rng(4).normal(2.0, 3.0, (6, 5, 4, 3)), tf.bfloat16)
    assert ours._fused(x, None)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        assert y.dtype == tf.bfloat16
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append([tf.cast(t, tf.float32).numpy() for t in (y, *grads, *layer.non_trainable_variables)])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.05)  # bfloat16 keeps about 3 digits


def test_saved_and_loaded_as_itself(tmp_path):
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, BatchNormalization(name="bn")(inputs))
    model.layers[-1].set_weights([np.full(2, v, "float32") for v in (2.0, 0.5, 1.0, 4.0)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is BatchNormalization
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_an_encoder_saved_in_one_process_loads_in_a_fresh_one(tmp_path):
    """As ``patchcfg embed`` loads what ``patchcfg pretrain`` saved: nothing else imported first."""
    import subprocess
    import sys

    from patchcfg.models.backbones import build_backbone

    build_backbone({"name": "resnet18", "width": 0.125}, (16, 16, 3)).save(tmp_path / "encoder.keras")
    code = ("from patchcfg.models.weights import load_encoder; import sys; "
            "print(type(load_encoder(sys.argv[1]).get_layer('stem_bn')).__module__)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "encoder.keras")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("patchcfg.models.layers")
