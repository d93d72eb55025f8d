"""Choosing a ``tf.distribute`` strategy from ``distribute.strategy``.

- ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy when
  there are several GPUs, else the default (one-device) strategy.
- ``default`` / ``mirrored`` / ``multi_worker``: that strategy, explicitly.

MultiWorkerMirroredStrategy must be created before TensorFlow runs any op, so callers create the
strategy first (``patchcfg pretrain`` does it right after validating the config). Whether this
process is the chief is known from ``TF_CONFIG`` alone (:func:`is_chief`), without TensorFlow.
"""

from __future__ import annotations

import json
import os

from patchcfg.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def tf_config() -> dict | None:
    """The parsed ``TF_CONFIG`` environment variable, or None."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON: {error}") from None


def worker_count() -> int:
    cluster = (tf_config() or {}).get("cluster", {})
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` says this process is a worker other than the chief.

    The chief is the ``chief`` task if the cluster has one, else worker 0.
    """
    config = tf_config()
    if not config:
        return True
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    if "chief" in config.get("cluster", {}):
        return False
    return kind == "worker" and index == 0


def resolve_name(name: str = "auto") -> str:
    """Which strategy ``name`` means on this machine (without creating it)."""
    if name not in STRATEGIES:
        raise UserError(f"unknown distribute.strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if worker_count() > 1:
        return "multi_worker"
    import tensorflow as tf

    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name: str = "auto", devices=None):
    """A ``tf.distribute.Strategy`` for ``name`` (see module docstring); ``devices`` for mirrored."""
    import tensorflow as tf

    resolved = resolve_name(name)
    if resolved == "multi_worker":
        if not tf_config():
            raise UserError("distribute.strategy: multi_worker needs TF_CONFIG (cluster and task); "
                             "see the README section on several machines")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if resolved == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def describe(strategy) -> dict:
    """Facts for env.json: the strategy's class, replicas in sync, workers and local devices."""
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy has no device list
        devices = []
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync),
            "workers": max(1, worker_count()), "replica_devices": [str(d) for d in devices]}
