"""The model-only SimCLR step, side by side: our ResNet with its fused batch normalization, the
same ResNet with Keras 3's own ``BatchNormalization``, and (when ``tf_keras`` is installed) the same
ResNet built with Keras 2 layers on the same TensorFlow; then ours and Keras' under the
``mixed_bfloat16`` policy (``pretrain.mixed_precision``) and ours compiled by XLA
(``jit_compile=True``).

ResNet-18 at width 0.25, 32-px RGB, batch 128, two views, a 2-layer projection head (256 -> 128),
NT-Xent at temperature 0.2, Adam; no input pipeline (the views are constant tensors). Each arm runs
in its own process, the arms alternate for ``--rounds`` rounds (the machine is shared and noisy:
compare the medians, not single runs). One JSON line per measurement, then one per arm with its
median and its ratio to ours.

    python benchmarks/train_step.py [--rounds 3] [--steps 20]

The Keras 2 arm needs ``pip install tf-keras==<your TensorFlow's version>`` in this environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ARMS = ("fused_bn", "keras_bn", "tf_keras", "fused_bn_bf16", "keras_bn_bf16", "fused_bn_xla")
BATCH, SIZE, TEMPERATURE = 128, 32, 0.2


def build(arm: str):
    """(encoder, head, optimizer) of ``arm``: the same architecture, other layers."""
    import keras

    import patchcfg.models.resnet as resnet

    if arm.startswith("keras_bn"):
        resnet.BatchNormalization = keras.layers.BatchNormalization
    if arm.endswith("_bf16"):
        keras.config.set_dtype_policy("mixed_bfloat16")
    if arm == "tf_keras":
        import tf_keras

        resnet.keras, resnet.layers = tf_keras, tf_keras.layers
        resnet.BatchNormalization = tf_keras.layers.BatchNormalization
        keras = tf_keras
    trunk = resnet.small_resnet((SIZE, SIZE, 3), (2, 2, 2, 2), width=0.25)
    encoder = keras.Sequential([trunk, keras.layers.GlobalAveragePooling2D()])
    head = keras.Sequential([keras.layers.Dense(256), resnet.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.Dense(128)])
    return encoder, head, keras.optimizers.Adam(1e-3)


def measure(arm: str, steps: int) -> float:
    """Images per second of ``steps`` training steps (after three to trace and warm up)."""
    import tensorflow as tf

    encoder, head, optimizer = build(arm)
    views = [tf.random.stateless_uniform((BATCH, SIZE, SIZE, 3), (seed, 0)) for seed in (1, 2)]
    encoder(views[0]), head(encoder(views[0]))
    variables = encoder.trainable_variables + head.trainable_variables

    @tf.function(jit_compile=arm.endswith("_xla"))
    def step(first, second):
        with tf.GradientTape() as tape:
            z = head(encoder(tf.concat([first, second], 0), training=True), training=True)
            z = tf.math.l2_normalize(tf.cast(z, tf.float32), 1)
            logits = tf.matmul(z[:BATCH], z[BATCH:], transpose_b=True) / TEMPERATURE
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.range(BATCH), logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    for _ in range(3):
        step(*views)
    started = time.perf_counter()
    for _ in range(steps):
        loss = step(*views)
    float(loss)
    return BATCH * steps / (time.perf_counter() - started)


def available(arm: str) -> bool:
    if arm != "tf_keras":
        return True
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps({"images_per_second": measure(args.arm, args.steps)}))
        return
    arms = [a for a in ARMS if available(a)]
    if "tf_keras" not in arms:
        print(json.dumps({"what": "train_step", "arm": "tf_keras", "skipped": "tf_keras is not installed; "
                          "pip install tf-keras==<TensorFlow's version> to add the Keras 2 arm"}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict[str, list[float]] = {arm: [] for arm in arms}
    for round_ in range(args.rounds):
        for arm in arms:
            out = subprocess.run([sys.executable, __file__, "--arm", arm, "--steps", str(args.steps)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            rate = json.loads(out.strip().splitlines()[-1])["images_per_second"]
            results[arm].append(rate)
            print(json.dumps({"what": "train_step", "arm": arm, "round": round_, "images_per_second": round(rate, 1)}),
                  flush=True)
    ours = statistics.median(results["fused_bn"])
    for arm, rates in results.items():
        median = statistics.median(rates)
        print(json.dumps({"what": "train_step_median", "arm": arm, "images_per_second": round(median, 1),
                          "ours_over_this": round(ours / median, 3)}))


if __name__ == "__main__":
    main()
