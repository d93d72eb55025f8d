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
                             "see docs/pretraining.md, Several machines")
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


# ---------------------------------------------------------------------- inside a replica's step
# What a loss needs to know about the other replicas. TensorFlow is imported on first use, so that
# choosing a strategy (above) stays possible before TensorFlow runs.


def global_mean(per_example, global_batch_size: int):
    """A replica's share of the mean over the *global* batch (``tf.nn.compute_average_loss``).

    Summed over replicas (as gradients are) it is the mean over the global batch.
    """
    import tensorflow as tf

    per_example = tf.cast(per_example, tf.float32)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def replica_id_and_count():
    """``(replica id in sync group, number of replicas)`` in a replica context; (0, 1) otherwise."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def all_gather(tensor):
    """``tensor`` from every replica, concatenated on axis 0 in replica order (differentiable).

    The gradient of each replica's piece is the sum over replicas of what flows into it, so a loss
    on gathered values gives the same gradients as on one device with the global batch.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_gather(tensor, axis=0)


def replica_rows(local_rows):
    """``(offset, total)``: where this replica's ``local_rows`` rows start in the global batch, and
    the global batch's rows. Draws made for ``total`` rows and sliced at ``offset`` give every
    image the same draw whatever the number of replicas."""
    import tensorflow as tf

    replica, count = replica_id_and_count()
    local_rows = tf.cast(local_rows, tf.int32)
    return tf.cast(replica, tf.int32) * local_rows, local_rows * count


def gather_rows(*tensors):
    """``(gathered, offset)``: each (n, d_i) tensor from every replica, in one collective, and where
    this replica's rows start in them. On one replica: the tensors themselves and 0."""
    import tensorflow as tf

    _, count = replica_id_and_count()
    if count == 1:
        return tensors, 0
    offset, _ = replica_rows(tf.shape(tensors[0])[0])
    both = all_gather(tf.concat([tf.cast(t, tf.float32) for t in tensors], axis=1))
    gathered, start = [], 0
    for tensor in tensors:
        width = tf.shape(tensor)[1]
        gathered.append(tf.cast(both[:, start:start + width], tensor.dtype))
        start += width
    return tuple(gathered), offset
