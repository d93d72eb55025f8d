"""The model behind the queue: scores for every row, with a version; the newest version wins.

The :class:`Learner` owns the cached features of ``patchcfg embed`` (computed in a background
thread when missing; until then the queue is random) and a quick head (``patchcfg.active``) fitted
on every labelled training row. When the experiment has a fine-tuned fold ensemble, its
probabilities are computed in the background at start (one version); later refits of the quick
head are newer versions and take over. It refits in a background thread after ``label.retrain_every`` new
labels, or on request, scores the validation rows (``learning_curve.csv`` in the experiment's
``label/`` folder), and stops refitting once every ``label.stop_when`` threshold holds. The
server only asks it for a :meth:`snapshot`; it never waits for a fit.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError

METRICS = ("val_macro_auc", "val_accuracy")


@dataclass
class Snapshot:
    probabilities: np.ndarray | None  # (rows, classes), or None before the first fit
    features: np.ndarray | None  # (rows, dims) aligned with the table, or None
    has_features: np.ndarray | None  # (rows,) bool
    scored: np.ndarray | None  # (rows,) bool: rows whose probabilities are the model's
    version: int
    source: str
    classes: list[str]


def check_stop_when(stop_when: dict) -> None:
    unknown = [k for k in stop_when if k not in METRICS]
    if unknown:
        raise UserError(f"label.stop_when: unknown metric '{unknown[0]}'; "
                        f"the app measures {', '.join(METRICS)}")


def validation_metrics(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> dict:
    """Macro AUC over classes with both values known among ``rows``; accuracy over known cells."""
    from sklearn.metrics import roc_auc_score

    aucs, right, known_cells = [], 0, 0
    for c in range(labels.shape[1]):
        known = rows & (labels[:, c] >= 0)
        y = labels[known, c]
        if not known.any():
            continue
        p = probabilities[known, c]
        right += int(((p >= 0.5) == (y > 0.5)).sum())
        known_cells += int(known.sum())
        if 0 < y.sum() < len(y):
            aucs.append(float(roc_auc_score(y, p)))
    return {"val_macro_auc": float(np.mean(aucs)) if aucs else None,
            "val_accuracy": right / known_cells if known_cells else None}


class Learner:
    """Scores for the queue. ``store`` is the :class:`~patchcfg.label.store.LabelStore`."""

    def __init__(self, store, config: dict, experiment_dir: Path, *, embed: bool = True, log=print):
        self.store = store
        self.config = config
        self.settings = config["label"]
        self.experiment_dir = Path(experiment_dir)
        self.embed = embed
        self.log = log
        self.seed = int(config["seed"])
        self.lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self.version = 0
        self.source = "none"
        self.metrics: dict = {}
        self.stopped = False
        self.fitting = False
        self.features_state = "missing"  # missing | computing | ready | failed
        self.features_message = ""
        self.features_started: float | None = None
        self._probabilities = None
        self._probability_classes: list[str] = []
        self._scored = None  # rows the probabilities are about (None: those with features)
        self._features = None  # (features, paths) as cached
        self._aligned = None  # (generation, rows, features, has_features)
        self._labels_since_fit = 0
        self._threads: list[threading.Thread] = []
        check_stop_when(self.settings["stop_when"])

    # ----------------------------------------------------------------- features

    def start(self) -> None:
        """Load the cached features, or compute them in the background (when allowed); score with
        the fine-tuned ensemble in the background when there is one."""
        if (self.experiment_dir / "finetune" / "summary.json").is_file():
            self._spawn(self._score_with_ensemble)
        if (self.experiment_dir / "embed" / "features.npy").is_file():
            self._load_features()
        elif self.embed:
            self._spawn(self._compute_features)
        else:
            self.features_message = "no cached features (run `patchcfg embed`); the queue is random"

    def _spawn(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _load_features(self) -> None:
        from patchcfg.embed import load_features

        features, paths = load_features(self.experiment_dir)
        with self.lock:
            self._features = (features.astype(np.float32), paths)
            self._aligned = None
            self.features_state = "ready"
            dims = features.shape[1] if features.size else 0
            self.features_message = f"{len(paths)} cached features ({dims}-d)"
        self.refit_async()

    def _compute_features(self) -> None:
        from patchcfg.stages import run_embed

        self.features_state, self.features_started = "computing", time.time()
        self.features_message = "computing the features of every image (patchcfg embed)"
        self.log(f"{self.features_message}; the queue is random until they are ready")
        try:
            run_embed(self.config, root=self.experiment_dir.parent, verbose=0,
                      log=lambda text: setattr(self, "features_message", text))
            self._load_features()
            self.log(f"features ready: {self.features_message}")
        except Exception as error:  # noqa: BLE001 - shown on the page; the queue stays random
            self.features_state = "failed"
            self.features_message = f"computing features failed ({error}); the queue stays random"
            self.store.note(self.features_message, level="error")

    def _score_with_ensemble(self) -> None:
        """Probabilities of every readable row from the experiment's fine-tuned fold ensemble."""
        try:
            from patchcfg.data.loading import check_images, load_images
            from patchcfg.predict import predict_arrays, resolve_models

            models, model_data, model_classes = resolve_models(self.experiment_dir)
            with self.store.lock:
                classes, paths = list(self.store.classes), self.store.table.resolved_paths()
            if model_classes and model_classes != classes:
                self.store.note(f"the fine-tuned models know the classes {model_classes}, "
                                f"the table has {classes}: "
                                "their scores are not used", level="warning")
                return
            good, _ = check_images(paths, "skip", data_cfg=self.config["data"])
            good_set = set(good)
            rows = np.array([i for i, p in enumerate(paths) if p in good_set], int)
            probabilities = np.full((len(paths), len(classes)), 0.5, np.float32)
            tta = (self.config.get("finetune") or {}).get("tta", "none")
            for start in range(0, len(rows), 2048):  # bounded memory for large tables
                chunk = rows[start:start + 2048]
                images = load_images([paths[i] for i in chunk], model_data)
                probabilities[chunk] = predict_arrays(models, images, model_data, tta)
            scored = np.zeros(len(paths), bool)
            scored[rows] = True
            with self.lock:
                self.version += 1
                self._probabilities, self._probability_classes, self._scored = probabilities, classes, scored
                self.source = "fine-tuned ensemble"
            self.log(f"scores of the fine-tuned ensemble ready (v{self.version}, {len(rows)} images)")
        except Exception as error:  # noqa: BLE001 - shown on the page; the quick head still scores
            self.store.note(f"scoring with the fine-tuned ensemble failed: {error}", level="error")

    def _aligned_features(self):
        """(features, has_features) over the table's current rows."""
        with self.lock:
            if self._features is None:
                return None, None
            generation = (self.store.generation, len(self.store))
            if self._aligned is None or self._aligned[0] != generation:
                cached, paths = self._features
                where = {p: i for i, p in enumerate(paths)}
                table_paths = self.store.table.resolved_paths()
                index = np.array([where.get(p, -1) for p in table_paths], int)
                has = index >= 0
                aligned = np.zeros((len(table_paths), cached.shape[1]), np.float32)
                aligned[has] = cached[index[has]]
                self._aligned = (generation, aligned, has)
            return self._aligned[1], self._aligned[2]

    # ----------------------------------------------------------------- fitting

    def snapshot(self) -> Snapshot:
        features, has = self._aligned_features()
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
        """Called after labels changed; refits in the background every ``retrain_every`` labels."""
        every = int(self.settings["retrain_every"])
        self._labels_since_fit += new_labels
        if every and self._labels_since_fit >= every:
            self.refit_async()

    def refit_async(self) -> bool:
        if self._features is None or self.fitting or self.stopped:
            return False
        self.fitting = True
        self._spawn(self._refit_guarded)
        return True

    def _refit_guarded(self) -> None:
        try:
            self.refit()
        except Exception as error:  # noqa: BLE001 - shown on the page; the last scores stay
            self.store.note(f"refitting the quick head failed: {error}", level="error")
        finally:
            self.fitting = False

    def refit(self) -> dict:
        """Fit the quick head on every labelled training row now; returns the new version's summary."""
        with self._fit_lock:  # one fit at a time (a background refit and one asked for)
            return self._refit()

    def _refit(self) -> dict:
        from patchcfg import active

        features, has = self._aligned_features()
        if features is None:
            raise UserError("no features yet: the quick head needs the cached features of `patchcfg embed`")
        with self.store.lock:
            table = self.store.table
            classes = list(table.classes)
            labels = table.label_matrix()
            train = table.train_rows() & has
            validation = table.validation & ~table.exclude & has
        self._labels_since_fit = 0
        if not classes:
            raise UserError("the table has no classes yet; add one first")
        probabilities = active.quick_head_probabilities(features, labels, train, seed=self.seed)
        metrics = validation_metrics(probabilities, labels, validation)
        with self.lock:
            self.version += 1
            self._probabilities = probabilities.astype(np.float32)
            self._probability_classes = classes
            self._scored = None
            self.source = "quick head"
            self.metrics = metrics
            version = self.version
        self._record(version, int((labels[train] >= 0).sum()), metrics)
        stop = self.settings["stop_when"]
        if stop and all(metrics.get(k) is not None and metrics[k] >= v for k, v in stop.items()):
            self.stopped = True
            holds = ", ".join(f"{k} >= {v}" for k, v in stop.items())
            self.store.note(f"every label.stop_when threshold holds ({holds}):"
                            " retraining stops; the queue keeps its last ranking")
        return {"version": version, "source": self.source, "metrics": metrics}

    def _record(self, version: int, known: int, metrics: dict) -> None:
        folder = self.experiment_dir / "label"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "learning_curve.csv"
            fresh = not path.is_file()
            with open(path, "a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if fresh:
                    writer.writerow(["time", "version", "known_train_labels", *METRICS])
                writer.writerow([round(time.time(), 3), version, known, *[metrics.get(m) for m in METRICS]])
        except OSError as error:
            self.store.note(f"cannot write {folder}/learning_curve.csv ({error.strerror})", level="error")

    def state(self) -> dict:
        seconds = round(time.time() - self.features_started, 1) if self.features_started else None
        return {"version": self.version, "source": self.source, "metrics": self.metrics,
                "fitting": self.fitting, "stopped": self.stopped, "features": self.features_state,
                "features_message": self.features_message, "features_seconds": seconds}

    def join(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)
