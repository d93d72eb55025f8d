"""The shared training loop: resume equivalence, SIGINT, callbacks, metrics and TensorBoard."""

from __future__ import annotations

import glob
import os
import signal

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from patchcfg.experiment import Experiment  # noqa: E402
from patchcfg.train.loop import TrainLoop, TrainTask, best_metrics, flatten_config, global_mean  # noqa: E402

OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "warmup_cosine", "warmup_epochs": 1}


class Regression(TrainTask):
    """y = sum(x) with a small MLP; a step counter updated in after_step stands for method state."""

    def __init__(self, seed=0):
        self.seed = seed

    def build(self):
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        self.model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def dataset(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        x = rng.normal(size=(48, 4)).astype("float32")
        return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(8, drop_remainder=True)

    def compute_loss(self, batch, global_batch_size):
        x, y = batch
        error = tf.reduce_mean(tf.square(self.model(x, training=True) - y), axis=1)
        return global_mean(error, global_batch_size), {"abs_error": global_mean(tf.sqrt(error), global_batch_size)}, {}

    def after_step(self, strategy, aux):
        self.counter.assign_add(1)

    def checkpoint_items(self):
        return {"model": self.model, "counter": self.counter}


def make_loop(run, epochs=4, callbacks=(), task=None, **kwargs):
    return TrainLoop(task or Regression(), run=run, epochs=epochs, steps_per_epoch=6, global_batch_size=8,
                     optimizer_config=OPTIMIZER, callbacks=callbacks, verbose=0, **kwargs)


def stage(root, name="toy", force=False):
    return Experiment({"name": name, "seed": 0}, root=root, force=force).stage("pretrain")


class SignalAt(keras.callbacks.Callback):
    """Send SIGINT to this process after batch ``batch`` of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch, batch, signum=signal.SIGINT):
        super().__init__()
        self.at, self.signum, self.epoch = (epoch, batch), signum, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, signum):
    straight = make_loop(None)
    straight_result = straight.fit()

    run = stage(tmp_path)
    interrupted = make_loop(run, callbacks=[SignalAt(epoch=1, batch=2, signum=signum)])
    with pytest.raises(KeyboardInterrupt), run:
        interrupted.fit()
    assert run.state == "interrupted"
    assert tf.train.latest_checkpoint(str(run.checkpoint_dir)) is not None
    assert [row["epoch"] for row in run.read_metrics()] == [1]

    run = stage(tmp_path)
    resumed = make_loop(run)
    with run:
        result = resumed.fit()
    assert run.state == "complete" and result["resumed"] and result["epochs_completed"] == 4
    assert [row["epoch"] for row in run.read_metrics()] == [1, 2, 3, 4]
    for a, b in zip(straight.task.model.get_weights(), resumed.task.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(resumed.task.counter.numpy()) == int(straight.task.counter.numpy()) == 24
    assert int(resumed.optimizer.iterations.numpy()) == 24
    assert result["final"]["loss"] == pytest.approx(straight_result["final"]["loss"], rel=1e-5)


def test_early_stopping_metrics_tensorboard_and_hparams(tmp_path):
    run = stage(tmp_path)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e6)
    hparams = flatten_config({"pretrain": {"epochs": 10, "optimizer": OPTIMIZER}, "data": {"imshape": [8, 8]}})
    loop = make_loop(run, epochs=10, callbacks=[stop], hparams=hparams, trial_id="toy")
    with run:
        result = loop.fit()
    assert result["stopped_early"] and result["epochs_completed"] == 2
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss", "abs_error", "lr", "seconds", "images_per_second"} <= set(rows[0])
    tags = set()
    for path in glob.glob(str(run.tensorboard_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"loss", "abs_error", "lr"} <= tags
    assert "_hparams_/session_start_info" in tags
    assert best_metrics(rows)["loss"]["mode"] == "min"
    # a checkpoint was written at the early stop, named after the optimizer step
    assert tf.train.latest_checkpoint(str(run.checkpoint_dir)).endswith("ckpt-12")


def test_early_stopping_resumes_with_its_patience_count_and_best_weights(tmp_path):
    """Interrupted while EarlyStopping is counting, a resumed run stops at the epoch a straight one
    does and restores the same best weights (patience is not started over)."""

    def stopper():
        return keras.callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=1e6, restore_best_weights=True)

    straight_run = stage(tmp_path / "a")
    with straight_run:
        straight = make_loop(straight_run, epochs=10, callbacks=[stopper()])
        assert straight.fit()["epochs_completed"] == 3  # best at epoch 1, then two epochs without improvement

    run = stage(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt), run:
        make_loop(run, epochs=10, callbacks=[stopper(), SignalAt(epoch=2, batch=2)]).fit()
    assert (run.checkpoint_dir / "callbacks.json").is_file()
    run = stage(tmp_path / "b")
    with run:
        resumed = make_loop(run, epochs=10, callbacks=[stopper()])
        result = resumed.fit()
    assert result["resumed"] and result["stopped_early"] and result["epochs_completed"] == 3
    for a, b in zip(straight.task.model.get_weights(), resumed.task.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_flatten_config_gives_hparams_values():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2], "d": None}, "e": "x", "f": True})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d": "None", "e": "x", "f": True}


def test_folds_keep_their_own_checkpoints_tensorboard_and_rows(tmp_path):
    run = stage(tmp_path)
    with run:
        results = [make_loop(run, epochs=2, subdir=f"fold_{k}", row_keys={"fold": k}).fit() for k in (0, 1)]
    rows = run.read_metrics()
    assert [(r["fold"], r["epoch"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [[r["fold"] for r in result["history"]] for result in results] == [[0, 0], [1, 1]]
    for k in (0, 1):
        assert tf.train.latest_checkpoint(str(run.checkpoint_dir / f"fold_{k}")) is not None
        assert glob.glob(str(run.tensorboard_dir / f"fold_{k}" / "events.out.tfevents.*"))
