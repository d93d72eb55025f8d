"""What the labelling app's routes share (:class:`LabelApp`): the store, the queue, the learner,
the renderer, the jobs and the settings; its start and stop (the table flushed on an idle, the
session's ``label/session.json`` and ``status.json`` for ``patchcfg analyze``)."""

from __future__ import annotations

import json
import threading
import time

from patchcfg.label.similar import Similar


class LabelApp:
    """What the routes share: the store, the queue, the learner, the renderer and the settings."""

    def __init__(self, store, queue, learner, renderer, config: dict, idle_seconds: float = 2.0, jobs=None):
        self.store, self.queue, self.learner, self.renderer = store, queue, learner, renderer
        self.jobs = jobs
        self.config = config
        self.settings = config["label"]
        self.similar = Similar(store, queue, learner, self.settings["duplicate_threshold"])
        self.idle_seconds = idle_seconds
        self.started = time.time()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> None:
        _write_session(self)
        self.learner.start()
        threading.Thread(target=self.similar.warm, daemon=True).start()  # the rows' norms, for `m`
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        import patchcfg.active  # noqa: F401  (scikit-learn: imported here, not on the first queue request)

        while not self._stop.wait(0.5):
            try:
                self.store.idle_flush(self.idle_seconds)
            except Exception as error:  # noqa: BLE001 - the journal holds every label; try again
                self.store.note(f"writing the table failed: {error}", level="error")

    def stop(self) -> None:
        self._stop.set()
        if self._flusher:
            self._flusher.join(5)
        if self.jobs is not None:
            self.jobs.stop()
        self.store.flush()
        self.learner.close()
        _write_status(self, "complete")
        self.store.close()

    def _subset_values(self) -> list[str]:
        with self.store.lock:
            if "subset" not in self.store.table.df.columns:
                return []
            return sorted(set(self.store.table.subsets()) - {""})

    def validation_warnings(self, counts: dict) -> list[str]:
        """Classes with too few validation labels to measure (present or absent)."""
        from patchcfg.label.metrics import MIN_VALIDATION

        few = []
        for cls, entry in counts["classes"].items():
            v = entry["validation"]
            if min(v["present"], v["absent"]) < MIN_VALIDATION:
                few.append(f"{cls} ({v['present']} present, {v['absent']} absent)")
        if not few:
            return []
        return [f"too few validation labels to measure (fewer than {MIN_VALIDATION} present or absent): "
                + ", ".join(few)]

    def state(self) -> dict:
        from patchcfg.active.strategies import strategy_listing
        from patchcfg.active.subsets import SUBSETS

        store = self.store
        counts = store.counts()
        labelled = len(store.session_rows)
        hours = max(time.time() - (store.first_label_time or time.time()), 60.0) / 3600
        return {
            "table": str(store.path), "journal": str(store.journal_path), "classes": store.classes,
            "counts": counts, "exclusive": self.queue.exclusive(self.store.classes) is True,
            "session": {"rows_labelled": labelled, "cells_changed": store.session_cells,
                        "labels_per_hour": round(labelled / hours, 1) if labelled else 0.0,
                        "seconds": round(time.time() - self.started)},
            "model": self.learner.state(), "ordered_by": self.queue.ordered_by,
            "validation_warnings": self.validation_warnings(counts),
            "jobs": self.jobs.state() if self.jobs is not None else [],
            "settings": {"grid": self.settings["grid"], "retrain_every": self.settings["retrain_every"],
                         "retrain_after_pause": self.settings["retrain_after_pause"],
                         "finetune_every": self.settings["finetune_every"],
                         "reserve_seconds": self.settings["reserve_seconds"],
                         "duplicate_threshold": self.settings["duplicate_threshold"],
                         "validation_fraction": self.settings["validation_fraction"],
                         "display": self.settings["display"], "stop_when": self.settings["stop_when"]},
            "query": {"strategy": self.config["query"]["strategy"], "subset": self.config["query"]["subset"]},
            "strategies": list(strategy_listing()), "subsets": list(SUBSETS),
            "subset_values": self._subset_values(),
            "seq": store.seq, "generation": store.generation, "pending": store.pending(),
            "error": store.error, "messages": store.messages[-8:],
        }


def _write_status(app: LabelApp, state: str) -> None:
    """``label/status.json``, so that ``patchcfg analyze`` lists the labelling session as a stage."""
    from patchcfg.atomic import atomic_write_json

    folder = app.learner.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "status.json", {"state": state, "stage": "label", "started": app.started,
                                                   "updated": time.time(), "error": None})
    except OSError as error:
        app.store.note(f"cannot write {folder}/status.json ({error.strerror})", level="warning")


def _write_session(app: LabelApp) -> None:
    """The session's settings in ``experiments/<name>/label/session.json`` (beside the learning curve)
    and its state in ``status.json``."""
    from patchcfg.atomic import atomic_write_text

    _write_status(app, "running")

    folder = app.learner.experiment_dir / "label"
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "table": str(app.store.path.resolve()),
               "journal": str(app.store.journal_path.resolve()), "rows": len(app.store),
               "classes": app.store.classes, "label": app.settings, "query": app.config["query"]}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "session.json", json.dumps(session, indent=2) + "\n")
    except OSError as error:
        app.store.note(f"cannot write {folder}/session.json ({error.strerror})", level="warning")
