"""Keras callbacks from a config's ``callbacks`` mapping (``{ClassName: {kwargs}}``).

The training loop drives them through ``keras.callbacks.CallbackList`` with the task's model, so
``EarlyStopping`` (on any logged metric: ``loss``, ``probe_accuracy``...) and ``TerminateOnNaN``
work as with ``model.fit``.

    >>> [type(c).__name__ for c in build_callbacks({"EarlyStopping": {"monitor": "loss", "patience": 2}})]
    ['EarlyStopping']
"""

from __future__ import annotations

import keras

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
