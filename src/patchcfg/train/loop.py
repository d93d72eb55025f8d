"""One strategy-aware training loop for every trainer (pretraining, fine-tuning, distillation).

``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so there is one
custom loop for every strategy: ``strategy.experimental_distribute_dataset`` + ``strategy.run``
inside a ``tf.function``. A trainer is a :class:`TrainTask`: it builds its models, gives a
dataset of *global* batches for each epoch and a loss for a *replica's* share of a batch;
:class:`TrainLoop` owns the rest:

- the optimizer and learning-rate schedule (``optimizer`` config section), mixed precision
  (:mod:`patchcfg.train.precision`);
- gradient application (gradients are summed over replicas, so the task scales its loss by the
  global batch, e.g. with :func:`global_mean`);
- a ``tf.train.Checkpoint`` every ``checkpoint_every`` epochs (task state, optimizer, epoch and
  step counters) and resume from it; SIGINT/SIGTERM → checkpoint, then ``KeyboardInterrupt`` so the
  stage is marked ``interrupted``; resuming mid-epoch skips the batches already trained on, so an
  interrupted-and-resumed run ends where an uninterrupted one does (given a task whose data order
  and augmentation are seeded by ``(seed, epoch)``);
- ``metrics.csv`` rows and TensorBoard scalars per epoch, TensorBoard HParams, a progress bar;
- Keras callbacks through ``keras.callbacks.CallbackList`` (``EarlyStopping`` and friends work:
  they set ``task.model.stop_training``).

Writing a task::

    class MyTask(TrainTask):
        def build(self):                       # inside strategy.scope()
            self.model = ...
        def dataset(self, epoch):              # global batches, same order for the same epoch
            return make_dataset(..., shuffle=True, seed=hash((seed, epoch)), drop_remainder=True)
        def compute_loss(self, batch, global_batch_size):
            x, y = batch
            per_example = my_loss(y, self.model(x, training=True))
            return global_mean(per_example, global_batch_size), {}, {}

    result = TrainLoop(MyTask(), run=run, epochs=10, steps_per_epoch=100, global_batch_size=256,
                       optimizer_config={"name": "adam", "lr": 1e-3}).fit()
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras
import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.metrics import metric_mode
from patchcfg.train.distribute import all_gather, global_mean, replica_id_and_count
from patchcfg.train.optim import build_optimizer, current_lr
from patchcfg.train.precision import MIXED_FLOAT16, precision_policy


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's data order and augmentation: the same (seed, epoch), the same batches
    (resume relies on it); neighbouring epochs and seeds far apart."""
    return int((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**31 - 1))


class TrainTask:
    """What a trainer supplies to :class:`TrainLoop`. Override the methods that say so.

    Attributes:
        model: the ``keras.Model`` callbacks see (``stop_training``, ``get_weights``); set in build.
        seed: the run's seed.
    """

    model: keras.Model | None = None
    seed: int = 0
    #: set by the loop before :meth:`dataset` is called
    optimizer = None
    steps_per_epoch: int | None = None
    #: True when an epoch's data depends on the model trained so far (DeepCluster's pseudo-labels):
    #: the loop then calls :meth:`dataset` when the epoch starts, not ahead while the previous trains
    data_follows_model: bool = False

    # -- required -------------------------------------------------------------------------
    def build(self) -> None:
        """Create models and state variables. Called once, inside ``strategy.scope()``."""
        raise NotImplementedError

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """Global batches for ``epoch`` (0-based), at least ``steps_per_epoch`` of them, each of
        exactly the global batch size. Same ``epoch`` -> same batches (resume relies on it)."""
        raise NotImplementedError

    def compute_loss(self, batch, global_batch_size: int):
        """Replica context, inside the gradient tape: ``(loss, logs, aux)``.

        ``loss`` is this replica's share (see :func:`global_mean`); ``logs`` values are shares
        that sum over replicas to the global value; ``aux`` (a dict of tensors) is handed to
        :meth:`after_step`.
        """
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------------
    def epoch_seed(self, epoch: int) -> int:
        """The seed of ``epoch``'s data (:func:`epoch_seed` of the task's seed)."""
        return epoch_seed(self.seed, epoch)

    def trainable_variables(self) -> list:
        return list(self.model.trainable_variables)

    def reported(self, metric: str) -> bool:
        """Whether the progress line shows ``metric`` (metrics.csv and TensorBoard get them all)."""
        return True

    def train_step(self, batch, optimizer, global_batch_size: int):
        """One replica's step: loss, gradients, update. Override for unusual updates (GANs)."""
        variables = self.trainable_variables()
        with tf.GradientTape() as tape:
            loss, logs, aux = self.compute_loss(batch, global_batch_size)
            if self.model is not None and self.model.losses:
                loss = loss + tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        # a variable the loss does not reach (DINOv2's mask token outside masked pretraining) stays
        # as it is, as Keras would leave it, without Keras' warning at every trace
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None])
        return {"loss": loss, **logs}, aux

    def after_step(self, strategy, aux: dict) -> None:
        """Cross-replica context, in the same ``tf.function``, after the update (e.g. momentum
        encoders, queues). ``strategy.experimental_local_results(x)[0]`` reads a replica value.
        Runs without AutoGraph: write straight-line TensorFlow code."""
        return None

    def checkpoint_items(self) -> dict[str, Any]:
        """Trackables to checkpoint (models, variables, ``keras.random.SeedGenerator``...)."""
        return {"model": self.model}

    def on_train_begin(self, loop: TrainLoop) -> None:
        """Eager, every worker, before the first epoch (of this attempt)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> dict:
        """Eager, every worker, with the TensorBoard writer as default: extra metrics for ``epoch``
        (0-based). Must give the same values on every worker (callbacks decide on them)."""
        return {}

    def on_train_end(self, loop: TrainLoop) -> None:
        """Eager, every worker, after the last epoch (not when interrupted)."""


class _SignalFlag:
    """SIGINT/SIGTERM set a flag (the loop checkpoints and stops); a second signal stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False


def flatten_config(config: dict) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (:func:`patchcfg.config.flatten`) with every value an
    HParams value: lists and None become strings."""
    from patchcfg.config import flatten

    return {key: value if isinstance(value, bool | int | float | str) else str(value)
            for key, value in flatten(config).items()}


def best_metrics(rows: Sequence[dict]) -> dict[str, dict]:
    """For each metric with a direction: its best value and the epoch it was reached."""
    best: dict[str, dict] = {}
    for row in rows:
        for key, value in row.items():
            mode = metric_mode(key)
            if mode is None or not isinstance(value, int | float) or isinstance(value, bool) \
                    or not math.isfinite(value):
                continue
            current = best.get(key)
            if current is None or (value > current["value"] if mode == "max" else value < current["value"]):
                best[key] = {"value": value, "epoch": row.get("epoch"), "mode": mode}
    return best


class TrainLoop:
    """Train a :class:`TrainTask` for ``epochs`` epochs of ``steps_per_epoch`` global batches.

    Args:
        task: the trainer.
        run: a :class:`patchcfg.experiment.StageRun` (checkpoints, metrics.csv, TensorBoard, only
            written by the chief), or None to keep nothing on disk.
        epochs, steps_per_epoch, global_batch_size: the schedule; the global batch is split over
            replicas and must divide evenly.
        optimizer_config: the ``optimizer`` config section (schemas/optimizer.schema.json).
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        callbacks: Keras callbacks, driven with ``model=task.model``.
        checkpoint_every: epochs between checkpoints (the last epoch is always saved).
        mixed_precision: ``auto``, true or false: build the task's models under the dtype policy
            :func:`patchcfg.train.precision.precision_policy` chooses (:attr:`precision`), with
            loss scaling under ``mixed_float16``.
        hparams: a flat mapping written as TensorBoard HParams (see :func:`flatten_config`).
        verbose: ``"auto"`` (a progress bar on a terminal, one line per epoch otherwise), 0 or 1.
        log: where progress lines go (default: print to stdout); only the chief logs.
        subdir: keep checkpoints and TensorBoard logs under ``checkpoints/<subdir>`` and
            ``tensorboard/<subdir>`` (one loop per fold or training phase of a stage run).
        row_keys: extra columns of every metrics.csv row (e.g. ``{"fold": 2, "stage": 1}``); a
            resumed loop replaces its own rows only.
    """

    def __init__(self, task: TrainTask, *, epochs: int, steps_per_epoch: int, global_batch_size: int,
                 optimizer_config: dict, run=None, strategy=None, callbacks: Sequence = (),
                 checkpoint_every: int = 1, mixed_precision: bool | str = False, hparams: dict | None = None,
                 trial_id: str | None = None, verbose: str | int = "auto",
                 log: Callable[[str], None] | None = None, subdir: str | None = None,
                 row_keys: dict | None = None):
        self.task = task
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.global_batch_size = int(global_batch_size)
        self.optimizer_config = dict(optimizer_config)
        self.run = run
        self.strategy = strategy or tf.distribute.get_strategy()
        self.callbacks = list(callbacks)
        self.checkpoint_every = max(1, int(checkpoint_every))
        #: the Keras dtype policy the task's models are built under
        self.precision = precision_policy(mixed_precision)
        self.hparams = hparams
        self.trial_id = trial_id
        self.verbose = verbose
        self.subdir = subdir
        self.row_keys = dict(row_keys or {})
        self.is_chief = run.is_chief if run is not None else True
        self._log = log or (lambda text: print(text, flush=True))
        self.optimizer = None
        self.checkpoint = None
        self.manager = None
        self.writer = None
        self.rows: list[dict] = []  # this attempt's metrics rows (metrics.csv has every attempt's)
        replicas = self.strategy.num_replicas_in_sync
        if self.global_batch_size % replicas:
            raise UserError(f"batch_size {self.global_batch_size} does not split evenly over {replicas} "
                             f"replicas; use a multiple of {replicas}")

    # ------------------------------------------------------------------ setup
    def log(self, text: str) -> None:
        if self.is_chief and self.verbose != 0:
            self._log(text)

    def build(self) -> None:
        """Build the task's models and the optimizer under the strategy (idempotent)."""
        if self.optimizer is not None:
            return
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        try:
            with self.strategy.scope():
                self.task.build()
                variables = self.task.trainable_variables()
                optimizer = build_optimizer(self.optimizer_config, self.steps_per_epoch, self.epochs, variables)
                if self.precision == MIXED_FLOAT16:
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                    optimizer.build(variables)
                self.optimizer = optimizer
                self.task.optimizer = optimizer
                self.task.steps_per_epoch = self.steps_per_epoch
        finally:
            keras.config.set_dtype_policy(previous)
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.seconds_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        self.images_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_images")
        items = {k: v for k, v in self.task.checkpoint_items().items() if v is not None}
        self.checkpoint = tf.train.Checkpoint(
            optimizer=self.optimizer, epoch=self.epoch_var, step_in_epoch=self.step_var,
            train_seconds=self.seconds_var, train_images=self.images_var, **items)

    def restore(self) -> bool:
        """Restore the latest checkpoint of ``run`` if there is one; True when restored."""
        if self.run is None:
            return False
        # Every worker reads the chief's checkpoints (the experiment folder must be shared to
        # resume a multi-worker run); each writes to its own run.checkpoint_dir.
        latest = tf.train.latest_checkpoint(str(self._resume_dir()))
        if latest is None:
            return False
        # Newest first: a damaged checkpoint (a disk that filled up, a copy cut short) falls back
        # to the one before it, and is named; with none intact the user is told the way out.
        state = tf.train.get_checkpoint_state(str(self._resume_dir()))
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else [latest]
        damaged = []
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, IndexError, ValueError, AssertionError, OSError) as error:
                damaged.append(f"{path} ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
                continue
            if damaged:
                self.log(f"checkpoint {damaged[0]} is damaged; resuming from the previous one, {path}")
            return True
        from patchcfg.errors import ExperimentError

        raise ExperimentError(
            f"checkpoint {damaged[0]} is damaged and no intact checkpoint is left to resume from; "
            f"remove {self._resume_dir()} to start this stage afresh, or run again with --force")

    def save(self) -> None:
        """A checkpoint, and the progress of the callbacks (EarlyStopping's patience...) beside it."""
        if self.manager is not None:
            from patchcfg.train.callbacks import save_callback_state

            self.manager.save(checkpoint_number=int(self.optimizer.iterations.numpy()))
            save_callback_state(self.callbacks, self._sub(self.run.checkpoint_dir))

    def _make_step_function(self):
        strategy, task, optimizer, gbs = self.strategy, self.task, self.optimizer, self.global_batch_size
        after_step = tf.autograph.experimental.do_not_convert(task.after_step)

        def replica_step(batch):
            return task.train_step(batch, optimizer, gbs)

        @tf.function
        def step(batch):
            logs, aux = strategy.run(replica_step, args=(batch,))
            reduced = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in logs.items()}
            after_step(strategy, aux)
            return reduced

        return step

    def _make_state_sync(self):
        """A function that sets every replica's copy of the models' batch-norm moving statistics to
        their mean over all replicas and workers; None with one replica. Each replica updates them
        from its own share of the batch, so without it workers would score the probe differently
        (and callbacks could stop one worker alone). Frozen weights are left alone: they agree."""
        if self.strategy.num_replicas_in_sync == 1:
            return None
        variables, seen = [], set()
        for item in [self.task.model, *self.task.checkpoint_items().values()]:
            for variable in getattr(item, "non_trainable_weights", None) or []:
                statistic = variable.path.rsplit("/", 1)[-1].startswith("moving_")
                if id(variable) not in seen and statistic and "float" in str(variable.dtype):
                    seen.add(id(variable))
                    variables.append(variable)
        if not variables:
            return None
        strategy = self.strategy

        @tf.function
        def sync():
            local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
            for variable, value in zip(variables, local, strict=True):
                variable.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

        return sync

    def _write_hparams(self) -> None:
        if not self.hparams or self.writer is None:
            return
        from tensorboard.plugins.hparams import api as hp

        with self.writer.as_default():
            hp.hparams(self.hparams, trial_id=self.trial_id)
        self.writer.flush()

    def _progress(self):
        if self.verbose == 0 or not self.is_chief:
            return None
        if self.verbose == 1 or (self.verbose == "auto" and sys.stdout.isatty()):
            return keras.utils.Progbar(self.steps_per_epoch, verbose=1)
        return None

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train (resuming if a checkpoint exists); returns a result dict (see the end)."""
        self.build()
        resumed = self.restore()
        run = self.run
        if run is not None:
            self.manager = tf.train.CheckpointManager(self.checkpoint, str(self._sub(run.checkpoint_dir)),
                                                      max_to_keep=2)
            if self.is_chief:
                logdir = self._sub(run.tensorboard_dir)
                logdir.mkdir(parents=True, exist_ok=True)
                self.writer = tf.summary.create_file_writer(str(logdir))
        if self.writer is None:
            self.writer = tf.summary.create_noop_writer()
        if not resumed:
            self._write_hparams()

        task, model = self.task, self.task.model
        if model is not None:
            model.stop_training = False
        callbacks = keras.callbacks.CallbackList(
            self.callbacks, add_history=True, add_progbar=False, model=model, verbose=0,
            epochs=self.epochs, steps=self.steps_per_epoch)
        step_fn = self._make_step_function()
        sync_state = self._make_state_sync()
        epoch, skip = int(self.epoch_var.numpy()), int(self.step_var.numpy())
        if resumed:
            self.log(f"resuming at epoch {epoch + 1}, step {skip + 1} of {self.steps_per_epoch}")
        start_epoch = epoch
        stopped_early = False
        logs: dict = {}
        task.on_train_begin(self)
        callbacks.on_train_begin()
        if resumed:
            from patchcfg.train.callbacks import restore_callback_state

            restore_callback_state(self.callbacks, self._resume_dir())
        # Each epoch's input pipeline is built (and starts reading) in a background thread while
        # the previous epoch trains, so an epoch does not start with a stall; unless the task's
        # data depends on the model trained so far.
        builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchcfg-data")
        ahead = not task.data_follows_model

        def upcoming_data(at_epoch, at_step):
            return builder.submit(self._epoch_dataset, at_epoch, at_step) if ahead and at_epoch < self.epochs else None

        upcoming = upcoming_data(epoch, skip)
        with _SignalFlag() as flag, builder:
            while epoch < self.epochs:
                callbacks.on_epoch_begin(epoch)
                batches = upcoming.result() if upcoming is not None else self._epoch_dataset(epoch, skip)
                upcoming = upcoming_data(epoch + 1, 0)
                if isinstance(batches, tf.data.Dataset):
                    batches = self.strategy.experimental_distribute_dataset(batches)
                progbar = self._progress()
                sums: dict[str, Any] = {}
                steps_run, step = 0, skip
                started = time.perf_counter()
                for batch in batches:
                    step_logs = step_fn(batch)
                    step += 1
                    steps_run += 1
                    self.step_var.assign(step)
                    self.images_var.assign_add(self.global_batch_size)
                    for key, value in step_logs.items():
                        sums[key] = sums[key] + value if key in sums else value
                    callbacks.on_train_batch_end(step - 1, step_logs)
                    if progbar is not None:
                        progbar.update(step, [(k, float(v)) for k, v in step_logs.items()])
                    if flag.signum is not None:
                        self.seconds_var.assign_add(time.perf_counter() - started)
                        self._interrupt(flag.signum)
                    if model is not None and model.stop_training:
                        break
                if sync_state is not None:
                    sync_state()
                seconds = time.perf_counter() - started
                self.seconds_var.assign_add(seconds)
                if steps_run == 0:
                    raise RuntimeError(f"epoch {epoch + 1}: the dataset gave no batches")
                epoch += 1
                skip = 0
                self.epoch_var.assign(epoch)
                self.step_var.assign(0)
                logs = {k: float(v.numpy()) / steps_run for k, v in sums.items()}
                logs["lr"] = current_lr(self.optimizer)
                with self.writer.as_default(step=epoch):
                    logs.update(task.on_epoch_end(epoch - 1, logs) or {})
                callbacks.on_epoch_end(epoch - 1, logs)
                row = {**self.row_keys, "epoch": epoch, **logs, "seconds": round(seconds, 3),
                       "images_per_second": round(steps_run * self.global_batch_size / max(seconds, 1e-9), 2)}
                self.rows.append(row)
                if run is not None:
                    run.append_metrics(row)
                self._write_scalars(epoch, row)
                stop = model is not None and model.stop_training
                if epoch % self.checkpoint_every == 0 or epoch == self.epochs or stop or flag.signum is not None:
                    self.save()
                self._report(epoch, row, progbar)
                if flag.signum is not None:
                    self._interrupt(flag.signum, saved=True)
                if stop:
                    stopped_early = epoch < self.epochs
                    self.log(f"stopped early after epoch {epoch} (a callback set stop_training)")
                    break
        callbacks.on_train_end(logs)
        task.on_train_end(self)
        self.writer.flush()
        if run is not None and self.is_chief:
            history = [r for r in run.read_metrics() if all(r.get(k) == v for k, v in self.row_keys.items())]
        else:
            history = list(self.rows)
        train_seconds = float(self.seconds_var.numpy())
        images = int(self.images_var.numpy())
        return {
            "epochs_completed": int(self.epoch_var.numpy()),
            "epochs_this_attempt": epoch - start_epoch,
            "resumed": resumed,
            "stopped_early": stopped_early,
            "final": logs,
            "history": history,
            "train_seconds": round(train_seconds, 3),
            "train_images": images,
            "images_per_second": round(images / train_seconds, 2) if train_seconds > 0 else None,
        }

    def _sub(self, path):
        return path / self.subdir if self.subdir else path

    def _resume_dir(self):
        """The chief's checkpoints: what every worker resumes from."""
        return self._sub(self.run.dir / "checkpoints")

    def _epoch_dataset(self, epoch: int, skip: int):
        """The epoch's batches: a started iterator on one device, else a dataset to distribute."""
        dataset = self.task.dataset(epoch).take(self.steps_per_epoch)
        if skip:
            dataset = dataset.skip(skip)
        if self.strategy is tf.distribute.get_strategy() and self.strategy.num_replicas_in_sync == 1:
            return iter(dataset)  # the default strategy: no distribution, start reading now
        return dataset

    def _interrupt(self, signum: int, saved: bool = False) -> None:
        if not saved:
            self.save()
        self.writer.flush()
        name = signal.Signals(signum).name
        self.log(f"\n{name}: checkpoint saved after {int(self.step_var.numpy())} of {self.steps_per_epoch} steps of "
                 f"epoch {int(self.epoch_var.numpy()) + 1}; run the same command again to resume")
        raise KeyboardInterrupt(name)

    def _write_scalars(self, epoch: int, row: dict) -> None:
        with self.writer.as_default(step=epoch):
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                    tf.summary.scalar(key, value)
        self.writer.flush()

    def _report(self, epoch: int, row: dict, progbar) -> None:
        shown = {k: v for k, v in row.items() if k not in ("epoch",) and isinstance(v, int | float)
                 and self.task.reported(k)}
        if progbar is not None:
            progbar.update(self.steps_per_epoch, finalize=True)
        parts = [f"{k} {v:.4g}" for k, v in shown.items()]
        self.log(f"epoch {epoch}/{self.epochs}  " + "  ".join(parts))


def environment_threads() -> int:
    """CPU threads available to this process (for tf.data parallelism hints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


__all__ = ["TrainTask", "TrainLoop", "global_mean", "all_gather", "replica_id_and_count", "flatten_config",
           "best_metrics", "epoch_seed", "metric_mode"]
