"""The cached features of ``patchcfg embed`` over the label table's rows, for the learner.

Loaded memory-mapped when ``embed/features.npy`` exists, else computed in the background (when
allowed; the queue is random until then); images added to the table since the last embed are
embedded in the background too. :meth:`FeatureCache.alignment` gives them row by row of the table.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from patchcfg.label.worker import MappedFeatures
from patchcfg.tasks.embed import positions_in, unreadable_paths


class FeatureCache:
    """The features of one experiment's ``embed`` stage, aligned with ``store``'s rows.

    ``spawn(target)`` runs background work (the learner joins it); ``on_loaded()`` is called each
    time features are loaded."""

    def __init__(self, store, config: dict, experiment_dir: Path, *, embed: bool, log, spawn, on_loaded):
        self.store, self.config, self.experiment_dir = store, config, Path(experiment_dir)
        self.embed, self.log, self.spawn, self.on_loaded = embed, log, spawn, on_loaded
        self.lock = threading.Lock()
        self.state = "missing"  # missing | computing | updating (ready; images added) | ready | failed
        self.message = ""
        self.started: float | None = None
        self._cached = None  # (features, paths, MappedFeatures or None) as cached
        self._aligned = None  # (rows generation, features, has_features, mapped) over the table's rows

    @property
    def loaded(self) -> bool:
        return self._cached is not None

    def start(self) -> None:
        """Load the cached features, or compute them in the background (when allowed)."""
        if (self.experiment_dir / "embed" / "features.npy").is_file():
            self.load()
            if self.embed:
                self.spawn(self._complete)
        elif self.embed:
            self.spawn(self._compute)
        else:
            self.message = "no cached features (run `patchcfg embed`); the queue is random"

    def load(self) -> None:
        from patchcfg.tasks.embed import load_features

        features, paths = load_features(self.experiment_dir)
        try:
            mapped = MappedFeatures(str(features.filename), MappedFeatures.identify(features.filename))
        except (AttributeError, TypeError, OSError):  # not a file mapping (an empty file is read whole)
            mapped = None
        with self.lock:
            self._cached = (features, paths, mapped)  # memory-mapped: read when aligned
            self._aligned = None
            self.state = "ready"
            dims = features.shape[1] if features.size else 0
            self.message = f"{len(paths)} cached features ({dims}-d)"
        self.on_loaded()

    def _compute(self, missing: int | None = None) -> None:
        """Run the embed stage (in this process): every image, or the ``missing`` ones (rows added
        to the table since the last embed; the cached features rank the others meanwhile)."""
        from patchcfg.stages import run_embed

        self.state = "updating" if missing else "computing"
        self.started = time.time()
        self.message = (f"embedding the {missing} images added since the last embed (patchcfg embed)"
                        if missing else "computing the features of every image (patchcfg embed)")
        self.log(f"{self.message}; " + ("they join the queue when ready" if missing
                                       else "the queue is random until they are ready"))
        try:
            run_embed(self.config, root=self.experiment_dir.parent, verbose=0,
                      log=lambda text: setattr(self, "message", text))
            self.load()
            self.log(f"features ready: {self.message}")
        except Exception as error:  # noqa: BLE001 - shown on the page; the queue stays random
            if missing:
                self.state = "ready"
                self.message = f"embedding the added images failed ({error}); they are not ranked"
                self.store.note(self.message, level="warning")
                return
            self.state = "failed"
            self.message = f"computing features failed ({error}); the queue stays random"
            self.store.note(self.message, level="error")

    def _complete(self) -> None:
        """Embed the table's rows that have no cached features (images added since the last embed;
        not those the last embed found unreadable)."""
        _, has, _ = self.alignment()
        if has is None or has.all():
            return
        unreadable = unreadable_paths(self.experiment_dir)
        missing = int((~has).sum())
        if unreadable:
            with self.store.lock:
                paths = self.store.table.resolved_paths()
            missing = sum(1 for row in np.flatnonzero(~has) if row < len(paths) and paths[row] not in unreadable)
        if missing:
            self._compute(missing)

    def alignment(self):
        """(features, has_features, MappedFeatures or None) over the table's current rows: the
        cached features themselves (memory-mapped, no copy; the worker maps the same file) when the
        table's rows are the cached rows in order, else a float32 gather of them (zero where a row
        has none). Realigned only when rows may have moved (the table read again), not when a
        class is added or renamed."""
        with self.lock:
            if self._cached is None:
                return None, None, None
            rows = (self.store.rows_generation, len(self.store))
            if self._aligned is None or self._aligned[0] != rows:
                cached, paths, mapped = self._cached
                table_paths = self.store.table.resolved_paths()
                if table_paths == list(paths):
                    self._aligned = (rows, cached, np.ones(len(paths), bool), mapped)
                else:
                    index = positions_in(paths, table_paths)
                    has = index >= 0
                    aligned = np.zeros((len(table_paths), cached.shape[1]), np.float32)
                    aligned[has] = cached[index[has]]
                    self._aligned = (rows, aligned, has, None)
            return self._aligned[1:]

    def key(self, features):
        """What identifies ``features`` (an :meth:`alignment` result) to the worker: sent once per key."""
        with self.lock:
            return (id(features), self._aligned[0]) if self._aligned else None
