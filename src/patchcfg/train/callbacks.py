"""Keras callbacks from a config's ``callbacks`` mapping (``{ClassName: {kwargs}}``).

The training loop drives them through ``keras.callbacks.CallbackList`` with the task's model, so
``EarlyStopping`` (on any logged metric: ``loss``, ``probe_accuracy``...) and ``TerminateOnNaN``
work as with ``model.fit``. What they have learnt so far (EarlyStopping's patience count, best value
and best weights) is saved with every checkpoint and restored on resume, so an interrupted run stops
at the epoch a straight run would (:func:`save_callback_state`, :func:`restore_callback_state`).

    >>> [type(c).__name__ for c in build_callbacks({"EarlyStopping": {"monitor": "loss", "patience": 2}})]
    ['EarlyStopping']
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import keras
import numpy as np

#: Callbacks a config may name (the schemas list the keyword arguments each accepts).
SUPPORTED = ("EarlyStopping", "TerminateOnNaN", "ReduceLROnPlateau", "CyclicLR")
#: Callbacks that watch a metric: ``monitor`` defaults to the stage's primary metric.
WATCHING = ("EarlyStopping", "ReduceLROnPlateau")


def build_callbacks(spec: dict | None, primary: str | None = None, mode: str | None = None
                    ) -> list[keras.callbacks.Callback]:
    """Instances of the callbacks named in ``spec`` (``{ClassName: {kwargs}}``), in the order written.

    With ``primary`` (fine-tuning's primary metric) and its ``mode``, a watching callback without
    a ``monitor`` watches ``primary``, and ``mode: auto`` is the metric's direction.
    """
    from patchcfg.metrics import metric_mode

    callbacks = []
    for name, kwargs in (spec or {}).items():
        if name not in SUPPORTED:
            raise ValueError(f"unsupported callback {name!r}; supported: {', '.join(SUPPORTED)}")
        kwargs = dict(kwargs or {})
        if name in WATCHING and primary is not None:
            kwargs.setdefault("monitor", primary)
            if kwargs.get("mode", "auto") == "auto":
                kwargs["mode"] = metric_mode(kwargs["monitor"]) or mode
        callbacks.append(CyclicLR(**kwargs) if name == "CyclicLR" else getattr(keras.callbacks, name)(**kwargs))
    return callbacks


#: attributes that carry a callback's progress from one epoch to the next
RESUMABLE = {"EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch")}
STATE_FILE = "callbacks.json"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def save_callback_state(callbacks, folder: Path) -> None:
    """Write the progress of ``callbacks`` (see :data:`RESUMABLE`) to ``folder``, atomically:
    ``callbacks.json``, and ``callback_<i>_best.npz`` for best weights kept in memory."""
    from patchcfg.atomic import atomic_write_bytes, atomic_write_json

    state = []
    for index, callback in enumerate(callbacks):
        name = type(callback).__name__
        if name not in RESUMABLE:
            continue
        entry = {"index": index, "class": name, **{a: _plain(getattr(callback, a, None)) for a in RESUMABLE[name]}}
        weights = getattr(callback, "best_weights", None)
        if weights is not None:
            entry["best_weights"] = f"callback_{index}_best.npz"
            # written again only when a new best came (a checkpoint every epoch must not rewrite
            # a whole model's weights that did not change)
            if getattr(callback, "_saved_best_epoch", None) != entry["best_epoch"] or \
                    not (folder / entry["best_weights"]).is_file():
                buffer = io.BytesIO()
                np.savez(buffer, *weights)
                atomic_write_bytes(folder / entry["best_weights"], buffer.getvalue())
                callback._saved_best_epoch = entry["best_epoch"]
        state.append(entry)
    if state:
        atomic_write_json(folder / STATE_FILE, state)


def restore_callback_state(callbacks, folder: Path) -> None:
    """Give ``callbacks`` back what :func:`save_callback_state` wrote (after their ``on_train_begin``)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return
    for entry in json.loads(path.read_text(encoding="utf-8")):
        if entry["index"] >= len(callbacks) or type(callbacks[entry["index"]]).__name__ != entry["class"]:
            continue  # the callbacks changed since; start them afresh
        callback = callbacks[entry["index"]]
        for attribute in RESUMABLE[entry["class"]]:
            setattr(callback, attribute, entry.get(attribute))
        if entry.get("best_weights") and (folder / entry["best_weights"]).is_file():
            with np.load(folder / entry["best_weights"]) as saved:
                callback.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch by ``monitor`` (in memory, and on disk for resume)."""

    def __init__(self, monitor: str, mode: str, path: Path | None, state_path: Path | None):
        super().__init__()
        self.monitor, self.mode, self.path, self.state_path = monitor, mode, path, state_path
        self.best, self.best_epoch, self.weights = None, None, None
        if state_path is not None and state_path.is_file() and path is not None and path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            self.best, self.best_epoch = state["best"], state["epoch"]
            self._load_from_disk = True
        else:
            self._load_from_disk = False

    def on_train_begin(self, logs=None):
        if self._load_from_disk:
            current = self.model.get_weights()
            self.model.load_weights(str(self.path))
            self.weights = self.model.get_weights()
            self.model.set_weights(current)

    def _better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            from patchcfg.errors import UserError

            raise UserError(f"finetune.primary_metric: '{self.monitor}' is not among the metrics "
                            f"({', '.join(sorted(logs or {}))})")
        if self._better(float(value)):
            self.best, self.best_epoch = float(value), epoch + 1
            self.weights = self.model.get_weights()
            if self.path is not None:
                from patchcfg.atomic import atomic_write_json

                tmp = self.path.with_name(".tmp-" + self.path.name)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                self.model.save_weights(str(tmp))
                tmp.replace(self.path)
                atomic_write_json(self.state_path, {"best": self.best, "epoch": self.best_epoch})

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class CyclicLR(keras.callbacks.Callback):
    """Cyclical learning rates (Smith 2017, "Cyclical Learning Rates for Training Neural Networks").

    ``triangular``: linear up and down between base_lr and max_lr every 2 x step_size steps;
    ``triangular2``: the amplitude halves each cycle; ``exp_range``: amplitude x gamma^step.
    """

    def __init__(self, base_lr=1e-4, max_lr=1e-3, step_size=200, mode="triangular", gamma=1.0):
        super().__init__()
        self.base_lr, self.max_lr, self.step_size = float(base_lr), float(max_lr), int(step_size)
        self.mode, self.gamma = mode, float(gamma)
        self.step = 0

    def lr_at(self, step: int) -> float:
        cycle = math.floor(1 + step / (2 * self.step_size))
        x = abs(step / self.step_size - 2 * cycle + 1)
        amplitude = (self.max_lr - self.base_lr) * max(0.0, 1 - x)
        if self.mode == "triangular2":
            amplitude /= 2 ** (cycle - 1)
        elif self.mode == "exp_range":
            amplitude *= self.gamma ** step
        return self.base_lr + amplitude

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_at(self.step))
        self.step += 1

    def on_train_batch_end(self, batch, logs=None):
        # The loop calls only *_end for batches: set the next step's rate here.
        self.on_train_batch_begin(batch, logs)
