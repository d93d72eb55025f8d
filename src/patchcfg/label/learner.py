"""The model behind the queue: scores for every row, with a version; the newest version wins.

The :class:`Learner` owns the cached features of ``patchcfg embed`` (computed in a background
thread when missing; until then the queue is random) and a quick head (``patchcfg.active``) fitted
on every labelled training row, in a worker process (:class:`Worker`) so that a fit never holds
the server's interpreter. It refits after ``label.retrain_every`` label changes, when labelling
pauses for ``label.retrain_after_pause`` seconds with labels not yet learnt, or on request, and
scores every row and the validation rows, and records each fit (``learning_curve.csv`` and
TensorBoard scalars in the experiment's ``label/`` folder). A version number is issued when a
fit's labels are read; a result is applied only if no newer version is (:meth:`Learner.apply`).
When the experiment has a fine-tuned fold ensemble, its probabilities are computed in the
background at start (one version; a quick-head fit issued later supersedes it). Finished finetune
jobs (:mod:`patchcfg.label.jobs`) rank the queue while they beat the quick head on validation.
Automatic refits stop once every ``label.stop_when`` threshold holds. The server only asks for
a :meth:`Learner.snapshot`; it never waits for a fit.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.tasks.embed import positions_in, unreadable_paths

METRICS = ("val_macro_auc", "val_accuracy")
#: Per class, the learner also logs ``val_auc_<class>``.
CLASS_METRIC = "val_auc_"
#: Fewer validation labels than this of a class (present or absent) and its AUC is not worth much.
MIN_VALIDATION = 5


@dataclass
class Snapshot:
    probabilities: np.ndarray | None  # (rows, classes), or None before the first fit
    features: np.ndarray | None  # (rows, dims) aligned with the table, or None
    has_features: np.ndarray | None  # (rows,) bool
    scored: np.ndarray | None  # (rows,) bool: rows whose probabilities are the model's
    version: int
    source: str
    classes: list[str]


def check_stop_when(stop_when: dict, classes=None) -> None:
    """Every key must be a metric the learner logs: ``val_macro_auc``, ``val_accuracy`` or
    ``val_auc_<class>`` (a class of the table, when ``classes`` is given)."""
    for key in stop_when:
        if key in METRICS:
            continue
        cls = key[len(CLASS_METRIC):] if key.startswith(CLASS_METRIC) else None
        if cls and (classes is None or cls in classes):
            continue
        per_class = f", {CLASS_METRIC}<class>" + (f" (classes: {', '.join(classes)})" if classes else "")
        raise UserError(f"label.stop_when: unknown metric '{key}'; the app measures "
                        f"{', '.join(METRICS)}{per_class}")


def stop_holds(stop_when: dict, metrics: dict) -> bool:
    """True when every threshold of ``stop_when`` holds (a metric not measured does not hold)."""
    return bool(stop_when) and all(metrics.get(k) is not None and metrics[k] >= v
                                   for k, v in stop_when.items())


def validation_metrics(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                       classes=None, exclusive: bool = False) -> dict:
    """Scores of ``probabilities`` on the validation ``rows``.

    ``val_auc_<class>`` for each class with both values known among ``rows``; ``val_macro_auc``
    their mean; ``val_accuracy``: with exclusive classes, the share of rows with one known present
    class whose highest probability is that class; otherwise the share of known cells on the right
    side of 0.5. ``None`` where nothing can be measured.
    """
    from sklearn.metrics import roc_auc_score

    classes = list(classes) if classes is not None else [str(c) for c in range(labels.shape[1])]
    out, aucs, right, known_cells = {}, [], 0, 0
    for c, name in enumerate(classes):
        known = rows & (labels[:, c] >= 0)
        y = labels[known, c]
        auc = None
        if known.any():
            p = probabilities[known, c]
            right += int(((p >= 0.5) == (y > 0.5)).sum())
            known_cells += int(known.sum())
            if 0 < y.sum() < len(y):
                auc = float(roc_auc_score(y, p))
                aucs.append(auc)
        out[CLASS_METRIC + name] = auc
    accuracy = right / known_cells if known_cells else None
    if exclusive and labels.shape[1]:
        one = rows & ((labels == 1).sum(axis=1) == 1)
        if one.any():
            truth = np.argmax(labels[one] == 1, axis=1)
            accuracy = float((np.argmax(probabilities[one], axis=1) == truth).mean())
        else:
            accuracy = None
    return {"val_macro_auc": float(np.mean(aucs)) if aucs else None, "val_accuracy": accuracy, **out}


def _better(a: dict, b: dict) -> bool:
    """Whether metrics ``a`` beat ``b`` on validation macro AUC (a measured value beats none)."""
    x, y = a.get("val_macro_auc"), b.get("val_macro_auc")
    return x is not None and (y is None or x > y)


# ----------------------------------------------------------------- the worker process

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
        self.features_state = "missing"  # missing | computing | updating (ready; images added) | ready | failed
        self.features_message = ""
        self.features_started: float | None = None
        self._probabilities = None
        self._probability_classes: list[str] = []
        self._scored = None  # rows the probabilities are about (None: those with features)
        self._features = None  # (features, paths, MappedFeatures or None) as cached
        self._aligned = None  # (rows generation, features, has_features, mapped) over the table's rows
        self._labels_since_fit = 0
        self._pause_ends = 0.0  # when labelling has paused long enough to fit the labels left
        self._pause_waiting = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.worker = Worker()
        self.curve: list[dict] = self._read_curve()
        self._events = None  # the TensorBoard event file, opened on the first record
        self._job = None  # (probabilities, scored, classes, source) of the applied finetune job
        check_stop_when(self.settings["stop_when"], store.classes)

    # ----------------------------------------------------------------- features

    def start(self) -> None:
        """Load the cached features, or compute them in the background (when allowed); score with
        the fine-tuned ensemble in the background when there is one."""
        if (self.experiment_dir / "finetune" / "summary.json").is_file():
            self._spawn(self._score_with_ensemble)
        if (self.experiment_dir / "embed" / "features.npy").is_file():
            self._load_features()
            if self.embed:
                self._spawn(self._complete_features)
        elif self.embed:
            self._spawn(self._compute_features)
        else:
            self.features_message = "no cached features (run `patchcfg embed`); the queue is random"

    def _spawn(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _load_features(self) -> None:
        from patchcfg.tasks.embed import load_features

        features, paths = load_features(self.experiment_dir)
        try:
            mapped = MappedFeatures(str(features.filename), MappedFeatures.identify(features.filename))
        except (AttributeError, TypeError, OSError):  # not a file mapping (an empty file is read whole)
            mapped = None
        with self.lock:
            self._features = (features, paths, mapped)  # memory-mapped: read when aligned
            self._aligned = None
            self.features_state = "ready"
            dims = features.shape[1] if features.size else 0
            self.features_message = f"{len(paths)} cached features ({dims}-d)"
        self.worker.warm_up()
        self.refit_async()

    def _compute_features(self, missing: int | None = None) -> None:
        """Run the embed stage (in this process): every image, or the ``missing`` ones (rows added
        to the table since the last embed; the cached features rank the others meanwhile)."""
        from patchcfg.stages import run_embed

        self.features_state = "updating" if missing else "computing"
        self.features_started = time.time()
        self.features_message = (f"embedding the {missing} images added since the last embed (patchcfg embed)"
                                 if missing else "computing the features of every image (patchcfg embed)")
        self.log(f"{self.features_message}; " + ("they join the queue when ready" if missing
                                                else "the queue is random until they are ready"))
        try:
            run_embed(self.config, root=self.experiment_dir.parent, verbose=0,
                      log=lambda text: setattr(self, "features_message", text))
            self._load_features()
            self.log(f"features ready: {self.features_message}")
        except Exception as error:  # noqa: BLE001 - shown on the page; the queue stays random
            if missing:
                self.features_state = "ready"
                self.features_message = f"embedding the added images failed ({error}); they are not ranked"
                self.store.note(self.features_message, level="warning")
                return
            self.features_state = "failed"
            self.features_message = f"computing features failed ({error}); the queue stays random"
            self.store.note(self.features_message, level="error")

    def _complete_features(self) -> None:
        """Embed the table's rows that have no cached features (images added since the last embed;
        not those the last embed found unreadable)."""
        _, has, _ = self._alignment()
        if has is None or has.all():
            return
        unreadable = unreadable_paths(self.experiment_dir)
        missing = int((~has).sum())
        if unreadable:
            with self.store.lock:
                paths = self.store.table.resolved_paths()
            missing = sum(1 for row in np.flatnonzero(~has) if row < len(paths) and paths[row] not in unreadable)
        if missing:
            self._compute_features(missing)

    def _score_with_ensemble(self) -> None:
        """Probabilities of every readable row from the experiment's fine-tuned fold ensemble."""
        version = self.issue()
        try:
            from patchcfg.label.jobs import ensemble_probabilities
            from patchcfg.tasks.predict import resolve_models

            models, model_data, model_classes = resolve_models(self.experiment_dir)
            with self.store.lock:
                classes, paths = list(self.store.classes), self.store.table.resolved_paths()
            if model_classes and model_classes != classes:
                self.store.note(f"the fine-tuned models know the classes {model_classes}, "
                                f"the table has {classes}: "
                                "their scores are not used", level="warning")
                return
            tta = self.config["finetune"]["tta"] if self.config.get("finetune") else "none"
            probabilities, rows = ensemble_probabilities(models, model_data, paths, len(classes),
                                                         self.config["data"], tta, 0.5)
            scored = np.zeros(len(paths), bool)
            scored[rows] = True
            if self.apply(version, probabilities, classes, scored, "fine-tuned ensemble", {}):
                self.log(f"scores of the fine-tuned ensemble ready (v{version}, {len(rows)} images)")
        except Exception as error:  # noqa: BLE001 - shown on the page; the quick head still scores
            self.store.note(f"scoring with the fine-tuned ensemble failed: {error}", level="error")

    def _alignment(self):
        """(features, has_features, MappedFeatures or None) over the table's current rows: the
        cached features themselves (memory-mapped, no copy; the worker maps the same file) when the
        table's rows are the cached rows in order, else a float32 gather of them (zero where a row
        has none). Realigned only when rows may have moved (the table read again), not when a
        class is added or renamed."""
        with self.lock:
            if self._features is None:
                return None, None, None
            rows = (self.store.rows_generation, len(self.store))
            if self._aligned is None or self._aligned[0] != rows:
                cached, paths, mapped = self._features
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

    # ----------------------------------------------------------------- fitting

    def snapshot(self) -> Snapshot:
        features, has, _ = self._alignment()
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
            if self._features is None or self.fitting or self.stopped:
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
        features, has, mapped = self._alignment()
        if features is None:
            raise UserError("no features yet: the quick head needs the cached features of `patchcfg embed`")
        with self.store.lock:
            table = self.store.table
            classes = list(table.classes)
            labels = table.label_matrix()
            train = table.train_rows() & has
            validation = table.validation & ~table.exclude & has
            with self.lock:
                key = (id(features), self._aligned[0]) if self._aligned else None
            version = self.issue()
            # Counted afresh from here, under the table's lock: a label applied after this read is
            # counted for the next fit (its notify comes after), none is lost between the two.
            self._labels_since_fit = 0
        return features, key, labels, train, validation, classes, mapped, version

    def _refit(self, asked: bool) -> dict:
        features, key, labels, train, validation, classes, mapped, version = self.training_inputs()
        if not classes:
            raise UserError("the table has no classes yet; add one first")
        result = self.worker.fit(key, features, labels, train, validation, self.seed, classes, self.exclusive,
                                 mapped=mapped)
        metrics = result["metrics"]
        job = self._job_metrics(labels, validation, classes)
        if job is not None and _better(job, metrics):
            applied = False  # the fine-tuned ensemble still scores better on validation: it keeps the queue
            with self.lock:
                self.metrics = job
        else:
            applied = self.apply(version, result["probabilities"], classes, None, "quick head", metrics)
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
        applied = quick is None or not _better(quick, metrics)
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

    # ----------------------------------------------------------------- history

    def _read_curve(self) -> list[dict]:
        import pandas as pd

        path = self.folder / "learning_curve.csv"
        if not path.is_file():
            return []
        try:
            frame = pd.read_csv(path)
            if "epoch" not in frame.columns:
                raise ValueError("no 'epoch' column")
        except (ValueError, OSError, pd.errors.ParserError) as error:
            kept = path.with_name("learning_curve.unreadable.csv")
            path.replace(kept)
            self.store.note(f"{path} was unreadable ({error}); kept as {kept.name}, a new curve starts",
                            level="warning")
            return []
        return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                for row in frame.to_dict("records")]

    def record(self, version: int, model: str, counts: dict, metrics: dict) -> None:
        """One point of the learning curve: ``learning_curve.csv`` (rewritten atomically) and
        TensorBoard scalars (step = labelled training rows)."""
        import pandas as pd

        from patchcfg.atomic import atomic_write_text

        point = {"epoch": len(self.curve) + 1, "time": round(time.time(), 3), "version": version,
                 "model": model, **counts, **{k: metrics.get(k) for k in METRICS},
                 **{k: v for k, v in metrics.items() if k not in METRICS}}
        with self.lock:
            self.curve.append(point)
            frame = pd.DataFrame(self.curve)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = frame.to_csv(index=False, lineterminator="\n")
            atomic_write_text(self.folder / "learning_curve.csv", text)
            self._scalars(point, model)
        except OSError as error:
            self.store.note(f"cannot write {self.folder}/learning_curve.csv ({error.strerror})",
                            level="error")

    def _scalars(self, point: dict, model: str) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        if self._events is None:
            folder = self.folder / "tensorboard"
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / f"events.out.tfevents.{int(time.time())}.label.{os.getpid()}", "ab")
            self._events = (handle, RecordWriter(handle))
            self._events[1].write(event_pb2.Event(wall_time=time.time(),
                                                  file_version="brain.Event:2").SerializeToString())
        handle, writer = self._events
        values = [summary_pb2.Summary.Value(tag=f"{model}/{k}", simple_value=float(v))
                  for k, v in point.items() if k.startswith("val_") and v is not None]
        event = event_pb2.Event(wall_time=point["time"], step=int(point["labels"]),
                                summary=summary_pb2.Summary(value=values))
        writer.write(event.SerializeToString())
        writer.flush()

    def state(self) -> dict:
        seconds = round(time.time() - self.features_started, 1) if self.features_started else None
        with self.lock:
            curve = [{k: p.get(k) for k in ("epoch", "version", "model", "labels", "validation_labels",
                                            *METRICS)} for p in self.curve[-500:]]
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
        if self._events is not None:
            self._events[0].close()
            self._events = None
