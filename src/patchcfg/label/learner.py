"""The model behind the queue: scores for every row, with a version; the newest version wins.

The :class:`Learner` owns the cached features of ``patchcfg embed``
(:mod:`patchcfg.label.features`: computed in a background thread when missing; until then the
queue is random) and a quick head (``patchcfg.active``) fitted on every labelled training row, in a
worker process (:mod:`patchcfg.label.worker`) so that a fit never holds the server's interpreter;
both are :mod:`patchcfg.label.scorers`. It refits after ``label.retrain_every`` label changes, when labelling
pauses for ``label.retrain_after_pause`` seconds with labels not yet learnt, or on request, and
scores every row and the validation rows, and records each fit (:mod:`patchcfg.label.curve`). A version number is issued when a
fit's labels are read; a result is applied only if no newer version is (:meth:`Learner.apply`).
When the experiment has a fine-tuned fold ensemble, its probabilities are computed in the
background at start (one version; a quick-head fit issued later supersedes it). Finished finetune
jobs (:mod:`patchcfg.label.jobs`) rank the queue while they beat the quick head on validation.
Automatic refits stop once every ``label.stop_when`` threshold holds (:mod:`patchcfg.label.metrics`). The server only asks for
a :meth:`Learner.snapshot`; it never waits for a fit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.label.curve import LearningCurve
from patchcfg.label.features import FeatureCache
from patchcfg.label.metrics import better, check_stop_when, stop_holds, validation_metrics
from patchcfg.label.scorers import FoldEnsembleScorer, LabelledRows, QuickHeadScorer, Scorer, Scores
from patchcfg.label.worker import Worker
from patchcfg.tasks.embed import positions_in


@dataclass
class Snapshot:
    probabilities: np.ndarray | None  # (rows, classes), or None before the first fit
    features: np.ndarray | None  # (rows, dims) aligned with the table, or None
    has_features: np.ndarray | None  # (rows,) bool
    scored: np.ndarray | None  # (rows,) bool: rows whose probabilities are the model's
    version: int
    source: str
    classes: list[str]


class Learner:
    """Scores for the queue. ``store`` is the :class:`~patchcfg.label.store.LabelStore`."""

    def __init__(self, store, config: dict, experiment_dir: Path, *, embed: bool = True, log=print):
        self.store = store
        self.config = config
        self.settings = config["label"]
        self.experiment_dir = Path(experiment_dir)
        self.folder = self.experiment_dir / "label"
        self.embed = embed
        self.log = log
        self.seed = int(config["seed"])
        # one softmax over every class (output groups are scored per group by the queue)
        self.exclusive = bool(config.get("finetune")) and not config["finetune"]["outputs"] \
            and config["finetune"]["output"]["type"] == "softmax"
        self.lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self.version = 0  # the version applied (what the queue ranks by)
        self._issued = 0  # the newest version handed to a fit or a scoring
        self.stale = 0  # results dropped because a newer version had been applied first
        self.source = "none"
        self.metrics: dict = {}
        self.stopped = False
        self.stopped_at: dict | None = None  # {"labels", "version", "metrics"} when stop_when held
        self.fitting = False
        self._probabilities = None
        self._probability_classes: list[str] = []
        self._scored = None  # rows the probabilities are about (None: those with features)
        self._labels_since_fit = 0
        self._pause_ends = 0.0  # when labelling has paused long enough to fit the labels left
        self._pause_waiting = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.worker = Worker()
        self.feature_cache = FeatureCache(store, config, self.experiment_dir, embed=embed, log=log,
                                          spawn=self._spawn, on_loaded=self._features_loaded)
        self.history = LearningCurve(self.folder, store.note)
        self._job = None  # (probabilities, scored, classes, source) of the applied finetune job
        check_stop_when(self.settings["stop_when"], store.classes)

    # ----------------------------------------------------------------- features

    def start(self) -> None:
        """Load the cached features, or compute them in the background (when allowed); score with
        the fine-tuned ensemble in the background when there is one."""
        if (self.experiment_dir / "finetune" / "summary.json").is_file():
            self._spawn(self._score_with_ensemble)
        self.feature_cache.start()

    def _spawn(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _features_loaded(self) -> None:
        self.worker.warm_up()
        self.refit_async()

    @property
    def features_state(self) -> str:
        return self.feature_cache.state

    @property
    def features_message(self) -> str:
        return self.feature_cache.message

    @property
    def features_started(self) -> float | None:
        return self.feature_cache.started

    @property
    def curve(self) -> list[dict]:
        """The learning curve's points, oldest first."""
        return self.history.points

    def _score_with_ensemble(self) -> None:
        """Probabilities of every readable row from the experiment's fine-tuned fold ensemble."""
        version = self.issue()
        try:
            from patchcfg.tasks.predict import resolve_models

            models, model_data, model_classes = resolve_models(self.experiment_dir)
            with self.store.lock:
                rows, paths = self._labelled_rows(), self.store.table.resolved_paths()
            if model_classes and model_classes != rows.classes:
                self.store.note(f"the fine-tuned models know the classes {model_classes}, "
                                f"the table has {rows.classes}: "
                                "their scores are not used", level="warning")
                return
            tta = self.config["finetune"]["tta"] if self.config.get("finetune") else "none"
            ensemble = FoldEnsembleScorer(models, model_data, paths, self.config["data"], tta)
            scores = self._scores_of(ensemble, rows)
            if self.apply(version, scores.probabilities, rows.classes, scores.scored, ensemble.source,
                          scores.metrics):
                self.log(f"scores of the fine-tuned ensemble ready (v{version}, {int(scores.scored.sum())} images)")
        except Exception as error:  # noqa: BLE001 - shown on the page; the quick head still scores
            self.store.note(f"scoring with the fine-tuned ensemble failed: {error}", level="error")

    @staticmethod
    def _scores_of(scorer: Scorer, rows: LabelledRows) -> Scores:
        """Fit ``scorer`` on ``rows`` and score every row with it."""
        scorer.fit(rows)
        return scorer.score(rows)

    def _labelled_rows(self, has: np.ndarray | None = None) -> LabelledRows:
        """The table's labels now (under the store's lock), the rows limited to ``has`` when given."""
        table = self.store.table
        train, validation = table.train_rows(), table.validation & ~table.exclude
        if has is not None:
            train, validation = train & has, validation & has
        return LabelledRows(table.label_matrix(), train, validation, list(table.classes))

    # ----------------------------------------------------------------- fitting

    def snapshot(self) -> Snapshot:
        features, has, _ = self.feature_cache.alignment()
        with self.lock:
            probabilities = self._probabilities
            if probabilities is not None and (self._probability_classes != self.store.classes
                                              or len(probabilities) != len(self.store)):
                probabilities = None  # fitted before a class was added or renamed, or rows moved
            scored = self._scored if self._scored is not None else has
            if probabilities is None or scored is None or len(scored) != len(self.store):
                scored = None
            return Snapshot(probabilities, features, has, scored, self.version, self.source,
                            list(self.store.classes))

    def notify(self, new_labels: int) -> None:
        """Called after labels changed; refits in the background every ``retrain_every`` labels, and
        ``retrain_after_pause`` seconds after the last label when fewer are left unlearnt."""
        every = int(self.settings["retrain_every"])
        self._labels_since_fit += new_labels
        if every and self._labels_since_fit >= every:
            self.refit_async()
        else:
            self._refit_after_pause()

    def _refit_after_pause(self) -> None:
        """Fit the labels left ``retrain_after_pause`` seconds after the last label change (each
        change moves the moment on; one waiting thread per pause)."""
        pause = self.settings["retrain_after_pause"]
        if pause is None or not int(self.settings["retrain_every"]):
            return
        with self.lock:
            self._pause_ends = time.monotonic() + float(pause)
            if self._pause_waiting:
                return
            self._pause_waiting = True
        threading.Thread(target=self._wait_for_pause, daemon=True).start()

    def _wait_for_pause(self) -> None:
        while True:
            with self.lock:
                left = self._pause_ends - time.monotonic()
                if left <= 0 or self._closed:
                    self._pause_waiting = False
                    break
            time.sleep(left)
        if self._labels_since_fit > 0 and not self._closed:  # a fit running now waits again when it ends
            self.refit_async()

    def refit_async(self) -> bool:
        """Refit in the background (not once ``stop_when`` held, nor while a fit runs)."""
        with self.lock:
            if not self.feature_cache.loaded or self.fitting or self.stopped:
                return False
            self.fitting = True
        self._spawn(self._refit_guarded)
        return True

    def _refit_guarded(self) -> None:
        try:
            self.refit(asked=False)
        except Exception as error:  # noqa: BLE001 - shown on the page; the last scores stay
            self.store.note(f"refitting the quick head failed: {error}", level="error")
            self.fitting = False
            return
        self.fitting = False
        every = int(self.settings["retrain_every"])
        if every and self._labels_since_fit >= every:  # labels that came during the fit
            self.refit_async()
        elif self._labels_since_fit:
            self._refit_after_pause()

    def issue(self) -> int:
        """A new version number, for a fit or a scoring whose inputs are taken now."""
        with self.lock:
            self._issued += 1
            return self._issued

    def apply(self, version: int, probabilities, classes, scored, source: str, metrics: dict) -> bool:
        """Make ``version``'s scores the queue's, unless a newer version is applied already."""
        with self.lock:
            if version <= self.version:
                self.stale += 1
                return False
            self.version = version
            self._probabilities = np.asarray(probabilities, np.float32)
            self._probability_classes = list(classes)
            self._scored = scored
            self.source = source
            self.metrics = metrics
            return True

    def refit(self, asked: bool = True) -> dict:
        """Fit the quick head on every labelled training row now (in the worker process); returns
        the new version's summary. ``asked``: a refit the annotator asked for, done even after
        ``stop_when`` held (automatic refits stay stopped)."""
        with self._fit_lock:  # one fit at a time (a background refit and one asked for)
            return self._refit(asked)

    def training_inputs(self):
        """(features, key, labels, train, validation, classes, mapped, version) of the table as it
        is now (``mapped``: the features as their file, when they are the file's rows in order)."""
        features, has, mapped = self.feature_cache.alignment()
        if features is None:
            raise UserError("no features yet: the quick head needs the cached features of `patchcfg embed`")
        with self.store.lock:
            rows = self._labelled_rows(has)
            key = self.feature_cache.key(features)
            version = self.issue()
            # Counted afresh from here, under the table's lock: a label applied after this read is
            # counted for the next fit (its notify comes after), none is lost between the two.
            self._labels_since_fit = 0
        return features, key, rows.labels, rows.train, rows.validation, rows.classes, mapped, version

    def _refit(self, asked: bool) -> dict:
        features, key, labels, train, validation, classes, mapped, version = self.training_inputs()
        if not classes:
            raise UserError("the table has no classes yet; add one first")
        head = QuickHeadScorer(self.worker, features, key, mapped, self.seed, self.exclusive)
        scores = self._scores_of(head, LabelledRows(labels, train, validation, classes))
        metrics = scores.metrics
        job = self._job_metrics(labels, validation, classes)
        if job is not None and better(job, metrics):
            applied = False  # the fine-tuned ensemble still scores better on validation: it keeps the queue
            with self.lock:
                self.metrics = job
        else:
            applied = self.apply(version, scores.probabilities, classes, scores.scored, head.source, metrics)
            self._job = None if applied else self._job
        counts = {"labels": int((train & (labels >= 0).any(axis=1)).sum()),
                  "validation_labels": int((validation & (labels >= 0).any(axis=1)).sum()),
                  "known_train_labels": int((labels[train] >= 0).sum())}
        if applied or job is not None:
            self.record(version, "quick_head", counts, metrics)
        if applied:
            self.check_stop(metrics, counts["labels"], version)
        return {"version": version, "applied": applied, "source": "quick head", "metrics": metrics, **counts}

    def _job_metrics(self, labels, validation, classes) -> dict | None:
        """The applied finetune job's scores on the current validation rows (None: no job applies)."""
        with self.lock:
            job = self._job
        if job is None or job[2] != classes or len(job[0]) != len(labels):
            return None
        return validation_metrics(job[0], labels, validation & job[1], classes, self.exclusive)

    def apply_job(self, job: dict, probabilities, paths, classes) -> tuple[bool, dict]:
        """A finished finetune job's probabilities (over its snapshot's ``paths``): scored on the
        current validation rows, and ranking the queue unless the quick head scores better there."""
        with self.store.lock:
            table = self.store.table
            current = list(table.classes)
            labels = table.label_matrix()
            validation = table.validation & ~table.exclude
            index = positions_in(paths, table.resolved_paths())
            version = self.issue()
        if list(classes) != current:
            raise UserError(f"the job learned the classes {list(classes)}, the table now has {current}")
        aligned = np.full((len(index), len(current)), 0.5, np.float32)
        aligned[index >= 0] = probabilities[index[index >= 0]]
        scored = (index >= 0) & np.isfinite(aligned).all(axis=1)
        aligned[~scored] = 0.5
        metrics = validation_metrics(aligned, labels, validation & scored, current, self.exclusive)
        with self.lock:
            quick = self.metrics if self.source == "quick head" else None
        applied = quick is None or not better(quick, metrics)
        source = f"finetune job {job['id']}"
        if applied:
            applied = self.apply(version, aligned, current, scored, source, metrics)
            if applied:
                with self.lock:
                    self._job = (aligned, scored, current, source)
        known = int((validation & (labels >= 0).any(axis=1)).sum())
        counts = {"labels": job["labels"], "validation_labels": known, "known_train_labels": None}
        self.record(version, "finetune", counts, metrics)
        return applied, metrics

    def check_stop(self, metrics: dict, labels: int, version: int) -> None:
        stop = self.settings["stop_when"]
        if self.stopped or not stop_holds(stop, metrics):
            return
        self.stopped = True
        self.stopped_at = {"labels": labels, "version": version,
                           "metrics": {k: metrics[k] for k in stop}}
        holds = ", ".join(f"{k} {metrics[k]:.3f} >= {v}" for k, v in stop.items())
        self.store.note(f"every label.stop_when threshold holds at {labels} labels (v{version}: {holds}):"
                        " automatic retraining stops; retrain (r) still refits when asked")

    def record(self, version: int, model: str, counts: dict, metrics: dict) -> None:
        """One point of the learning curve (step = labelled training rows)."""
        self.history.record(version, model, counts, metrics)

    def state(self) -> dict:
        seconds = round(time.time() - self.features_started, 1) if self.features_started else None
        curve = self.history.shown()
        return {"version": self.version, "source": self.source, "metrics": self.metrics,
                "fitting": self.fitting, "stopped": self.stopped, "stopped_at": self.stopped_at,
                "stop_when": self.settings["stop_when"], "features": self.features_state,
                "features_message": self.features_message, "features_seconds": seconds, "curve": curve}

    def join(self, timeout: float = 120.0) -> None:
        """Wait for the background work started so far (and the refits it starts) to end."""
        for thread in self._threads:
            thread.join(timeout)

    def close(self) -> None:
        self._closed = True
        self.join(5.0)
        self.worker.close()
        self.history.close()
