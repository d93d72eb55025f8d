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
from pathlib import Path

import keras
import numpy as np

#: Callbacks a config may name, with the keyword arguments each accepts.
SUPPORTED = {
    "EarlyStopping": ("monitor", "min_delta", "patience", "mode", "baseline", "restore_best_weights",
                      "start_from_epoch", "verbose"),
    "TerminateOnNaN": (),
}


def build_callbacks(spec: dict | None) -> list[keras.callbacks.Callback]:
    """Instances of the Keras callbacks named in ``spec``, in the order written."""
    callbacks = []
    for name, kwargs in (spec or {}).items():
        if name not in SUPPORTED:
            raise ValueError(f"unsupported callback {name!r}; supported: {', '.join(SUPPORTED)}")
        kwargs = dict(kwargs or {})
        unknown = set(kwargs) - set(SUPPORTED[name])
        if unknown:
            raise ValueError(f"callback {name}: unknown arguments {sorted(unknown)}")
        callbacks.append(getattr(keras.callbacks, name)(**kwargs))
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
