"""Batch inference on a Ray cluster: ``patchcfg embed|predict ... --engine ray [--address A]``.

Ray Data's batch-inference pattern (https://docs.ray.io/en/latest/data/batch_inference.html,
``Dataset.map_batches`` with a callable class): the image paths become a dataset of rows
``(position, path)``; ``map_batches`` runs a fixed pool of actors (``ActorPoolStrategy(size=n)``)
of a callable class, each loading the model once in ``__init__`` and decoding and embedding (or
predicting) a batch of paths per ``__call__`` with the very functions the local engine runs: the
classes stand beside them (:class:`patchcfg.tasks.embed.Embedder` over ``embed_paths``,
:class:`patchcfg.tasks.predict.Predictor` over ``predict_paths``). The driver reads the results
in order (``DataContext.execution_options.preserve_order``) and checks that every row comes
once, in order: the embed stage writes them through its resumable
:class:`~patchcfg.tasks.embed.FeatureWriter`, so the files are those of the local engine.

An actor per GPU (``num_gpus=1``) when the cluster has GPUs, else one per two CPUs (``--actors``
sets the number). An actor that dies is restarted and its batch run again: Ray Data's actor pool
defaults to ``max_restarts=-1`` and ``max_task_retries=-1``. Nothing here imports Ray until a run
asks for this engine. Every machine of the cluster needs patchcfg installed and the images and
the experiment folder at the same paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import re
import socket

import numpy as np

from patchcfg.errors import UserError

ENGINES = ("local", "ray")
#: images (crop cells, with ``data.crops``) per batch of a predict actor
PREDICT_BATCH = 256
#: an embed actor's batches per call: its pipeline decodes the next batch while the encoder runs
BATCHES_PER_CALL = 8


def check_engine(engine: str, *, shard=None, merge: bool = False, address=None, actors=None) -> None:
    """Refuse an unknown engine, ``address`` or ``actors`` without the ray engine, and the ray
    engine with ``--shard`` / ``--merge``."""
    if engine not in ENGINES:
        raise UserError(f"--engine: {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine != "ray" and (address is not None or actors is not None):
        raise UserError(f"{'--address' if address is not None else '--actors'}: only with --engine ray")
    if engine == "ray" and (shard is not None or merge):
        raise UserError(f"--engine ray and {'--shard' if shard is not None else '--merge'}: one or the other "
                        "(Ray spreads one embed over the cluster by itself; shards are for a scheduler without it)")


def connect(address: str | None = None):
    """The ``ray`` module, connected: to the cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``), else to the Ray instance this process already runs, else to a new local
    one. A :class:`UserError` when Ray is not installed or the cluster cannot be reached."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("--engine ray needs Ray, which is not installed: pip install 'patchcfg[ray]'") from None
    for handler in logging.getLogger("ray.data").handlers:  # its progress lines stay in its log file
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, _NoErrors) for f in handler.filters):
                handler.addFilter(_NoErrors())
    if ray.is_initialized():
        return ray
    options = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": False}
    if not str(address or "").startswith("ray://"):
        options["include_dashboard"] = False
    try:
        _answers(address)
        ray.init(address=address, **options)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(f"--engine ray: cannot connect to {where} ({reason}); check --address (on the head node, "
                        "`ray status` shows the cluster and `ray start --head` starts one)") from None
    return ray


def _answers(address: str | None, seconds: float = 5.0) -> None:
    """An ``OSError`` unless ``HOST:PORT`` (``ray://HOST:PORT``) accepts a connection within
    ``seconds``: ``ray.init`` would retry an address that does not answer for minutes."""
    target = str(address or "").removeprefix("ray://")
    if ":" not in target:  # none, auto, local: Ray finds its own
        return
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{port!r} is not a port number")
    socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()


def actor_pool(ray, actors: int | None = None) -> tuple[int, dict, int | None]:
    """(actors, their resources, TensorFlow threads per actor): one actor per GPU with
    ``num_gpus=1`` when the cluster has GPUs, else one per two CPUs, each reserving a CPU."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if actors is not None and actors < 1:
        raise UserError(f"--actors: {actors} is not a positive number")
    if gpus:
        if actors is not None and actors > gpus:
            raise UserError(f"--actors {actors}: the Ray cluster has {gpus} GPU(s), one per actor")
        return actors or gpus, {"num_gpus": 1}, None
    if actors is not None and actors > cpus:
        raise UserError(f"--actors {actors}: the Ray cluster has {cpus} CPU(s), at least one per actor")
    n = actors or max(1, cpus // 2)
    return n, {"num_cpus": 1}, max(1, cpus // n)


def set_threads(threads: int | None) -> None:
    """TensorFlow's threads in an actor (call first in its ``__init__``): its share of the CPUs."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))


#: the last line of an actor's traceback when it raised one of ours (Ray Data keeps its text only)
_REMOTE_USER_ERROR = re.compile(r"^patchcfg\.errors\.\w+: (.+)$", re.MULTILINE)


def user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` an actor raised (an image gone since the check, a missing encoder
    file on a node...), out of Ray's wrapping; None for any other error."""
    if isinstance(error, UserError) and getattr(error, "cause", None) is None:
        return error
    match = _REMOTE_USER_ERROR.search(str(error))
    return UserError(match[1]) if match else None


class _NoErrors(logging.Filter):
    """Ray Data's errors reach the user as the exception raised (our one message, or its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def map_in_order(paths, actor: type, constructor: dict, column: str, *, batch_size: int,
                 address: str | None = None, actors: int | None = None, say=None):
    """``column`` of ``actor(**constructor)(batch)`` for the rows of ``paths``, batch after batch
    in the order of ``paths`` (each row exactly once, checked), computed by a pool of actors."""
    import pandas as pd

    ray = connect(address)
    n, resources, threads = actor_pool(ray, actors)
    paths = [os.path.abspath(p) for p in paths]  # an actor elsewhere has another working folder
    if not paths:
        return
    batch_size = max(1, int(batch_size))
    rows = pd.DataFrame({"position": np.arange(len(paths), dtype=np.int64), "path": paths})
    blocks = [rows.iloc[start:start + batch_size] for start in range(0, len(rows), batch_size)]  # a batch a block
    if say is not None:
        where = ", ".join(f"{int(v)} {k}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU"))
        say(f"ray: {len(paths)} images in {len(blocks)} batches over {n} actor(s) ({where} in the cluster)")
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order  # a progress bar on a terminal; else its log file
    context.execution_options.preserve_order = True
    try:
        dataset = ray.data.from_pandas(blocks).map_batches(
            actor, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n),
            fn_constructor_kwargs={**constructor, "threads": threads}, **resources)
        expected = 0
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                positions = np.asarray(batch["position"])
                if not np.array_equal(positions, np.arange(expected, expected + len(positions))):
                    raise RuntimeError(f"ray: rows {positions[:3].tolist()}... came where row {expected} was due")
                expected += len(positions)
                yield np.asarray(batch[column])
        except Exception as error:
            ours = user_error(error)
            if ours is not None:
                raise ours from None
            raise
        if expected != len(paths):
            raise RuntimeError(f"ray: {expected} of {len(paths)} rows came back")
    finally:
        context.execution_options.preserve_order = before
