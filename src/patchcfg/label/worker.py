"""The learner's worker process: quick-head fits run there, so that a fit never holds the server's
interpreter. The cached features travel to it once per version, by reference when they are the
file :func:`~patchcfg.tasks.embed.load_features` mapped (:class:`MappedFeatures`)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from patchcfg.label.metrics import validation_metrics

_WORKER_FEATURES: dict = {}


@dataclass(frozen=True)
class MappedFeatures:
    """The cached ``features.npy`` by reference: the worker maps the same file (the page cache is
    shared) instead of receiving a pickled copy (2 GB at a million 512-d rows). ``identity``
    (device, inode, size, mtime) is the file the server mapped; another one there (a new embed
    published since) is refused, and the server then sends the rows themselves."""

    path: str
    identity: tuple

    @staticmethod
    def identify(path) -> tuple:
        stat = os.stat(path)
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def open(self):
        """The memory-mapped features, or None when the file there is not the one the server mapped."""
        try:
            if self.identify(self.path) != self.identity:
                return None
            features = np.load(self.path, mmap_mode="r")
            return features if self.identify(self.path) == self.identity else None
        except (OSError, ValueError):
            return None


def fit_quick_head(key, features, labels, train, validation, seed: int, classes, exclusive: bool) -> dict:
    """Run in the learner's worker process: fit the quick head, score every row and the validation
    rows. ``features`` travel once per ``key`` (None: the ones of an earlier call with that key), as
    rows or as :class:`MappedFeatures`."""
    from patchcfg import active

    if isinstance(features, MappedFeatures):
        features = features.open()
        if features is None:
            return {"need_features": True, "unmapped": True}
    if features is not None:
        _WORKER_FEATURES.clear()
        _WORKER_FEATURES[key] = features
    elif key not in _WORKER_FEATURES:
        return {"need_features": True}
    features = _WORKER_FEATURES[key]
    probabilities = active.quick_head_probabilities(features, labels, train, seed=seed, exclusive=exclusive)
    metrics = validation_metrics(probabilities, labels, validation, classes, exclusive)
    return {"probabilities": probabilities.astype(np.float32), "metrics": metrics}


def _one_thread() -> None:
    """The worker yields to the server: one thread for its numeric libraries, a lower priority; and
    it leaves Ctrl-C (sent to every process of the terminal's group) to the server, which stops it."""
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    threadpool_limits(1)
    try:
        os.nice(10)
    except OSError:  # not allowed here: the same priority then
        pass


def _warm_up() -> bool:
    import sklearn.linear_model  # noqa: F401  (the first fit should not wait for the import)

    return True


class Worker:
    """One process that fits quick heads, so that a fit never holds the server's interpreter.

    Started on first use (``spawn``: no copy of the server's threads or locks); restarted when it
    dies."""

    def __init__(self):
        self._executor = None
        self._lock = threading.Lock()
        self._sent_key = None

    def _pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_one_thread)
                self._sent_key = None
            return self._executor

    def warm_up(self) -> None:
        self._pool().submit(_warm_up)

    def fit(self, key, features, *args, mapped: MappedFeatures | None = None) -> dict:
        """The quick head's fit on ``features``, sent once per ``key``: as ``mapped`` (the file the
        worker maps itself) when given, else (or when the file changed) as the rows."""
        from concurrent.futures.process import BrokenProcessPool

        for _ in range(2):
            pool = self._pool()
            try:
                sent = None if self._sent_key == key else (mapped or features)
                result = pool.submit(fit_quick_head, key, sent, *args).result()
                if result.get("need_features") and mapped is not None and not result.get("unmapped"):
                    result = pool.submit(fit_quick_head, key, mapped, *args).result()
                if result.get("need_features"):
                    result = pool.submit(fit_quick_head, key, np.asarray(features), *args).result()
                self._sent_key = key
                return result
            except BrokenProcessPool:
                with self._lock:
                    self._executor = None  # the worker died (killed, out of memory): a fresh one
        raise RuntimeError("the quick head's worker process died twice")

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
