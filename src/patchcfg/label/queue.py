"""What each annotator sees next: the candidates of a subset ranked by a strategy, reserved for them.

Ranking goes through :mod:`patchcfg.active` (``candidate_mask``, ``parse_strategy``, ``rank``)
with the learner's latest scores. Rows handed to one client are reserved for
``label.reserve_seconds``: no other client is handed them meanwhile, and a label for a row that
another client holds is refused (409) with a message.

Each item of :meth:`Queue.next` is a row as the store gives it, with ``score``, ``picked_by``,
``probabilities`` (:meth:`Queue.annotate`) and ``suspect``: in a review of the labels
(``mistakes``), the row's likeliest wrong cell as confident learning flags it,
``{"class": name, "given": 0 or 1, "p": out-of-fold probability}``; None for a row with no
suspect cell, and for every row of the other strategies.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from patchcfg.active.rows import RowFeatures
from patchcfg.label.errors import RequestError


class Queue:
    def __init__(self, store, learner, config: dict):
        self.store = store
        self.learner = learner
        self.query = config["query"]
        self.reserve_seconds = float(config["label"]["reserve_seconds"])
        self.seed = int(config["seed"])
        self.finetune = config.get("finetune")
        self.reservations: dict[int, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.calls = 0
        self.ordered_by = f"{self.query['strategy']} over {self.query['subset']} (not asked yet)"

    def held_by_others(self, client: str, now: float) -> np.ndarray:
        held = [r for r, (c, until) in self.reservations.items() if c != client and until > now]
        return np.array(held, int)

    def exclusive(self, classes: list[str]):
        """How the scores see the classes: softmax (True), multi-hot (False) or output groups."""
        from patchcfg.errors import UserError
        from patchcfg.models.outputs import scoring_groups

        try:
            return scoring_groups(self.finetune, list(classes))
        except UserError:  # a class of the groups renamed on the page: score every class alone
            return False

    def next(self, client: str, strategy: str, subset: str, n: int) -> dict:
        from patchcfg import active
        from patchcfg.active.ranking import SCHEDULE_KEYS
        from patchcfg.active.strategies import feature_users, get_strategy

        if not 1 <= n <= 1000:
            raise RequestError(f"n must be between 1 and 1000, got {n}")
        snapshot = self.learner.snapshot()
        with self.store.lock:
            table = self.store.table
            classes = list(table.classes)
            try:
                name, _ = active.parse_strategy(strategy, classes)
                candidates = active.candidate_mask(table, subset, strategy=name)
            except RequestError:
                raise
            except Exception as error:  # UserError with did-you-mean, or a malformed name
                raise RequestError(str(error)) from None
            labels = table.label_matrix()
            train = ~table.validation & ~table.exclude  # the rows whose labels count toward auto's handover
            reviews = getattr(get_strategy(name), "reviews_labels", False)  # mistakes: labelled rows
            if reviews:
                labels[table.exclude] = -1  # kept out of the review's fit, as out of training
                subset = "the labelled rows" + (f" of {subset}" if subset != "unlabeled" else "")
        why = ""
        probabilities, features = snapshot.probabilities, snapshot.features
        scored_by = f"{snapshot.source} v{snapshot.version}"
        # auto's cold start ranks on the features alone: it needs no model yet
        cold_start = name == "auto" and features is not None
        if name != "random":
            if probabilities is None and snapshot.features is None:
                why = f"features not ready ({self.learner.features_message})"
            elif probabilities is None and snapshot.version and not cold_start:
                why = "the model is refitted for the changed classes"
            elif probabilities is None and not cold_start:
                why = "no model fitted yet (label some images, or retrain)"
            elif name in feature_users() and features is None:
                why = f"{name} needs the cached features ({self.learner.features_message})"
            if why:
                name, probabilities, features = "random", None, None
            else:
                if probabilities is not None:
                    candidates &= snapshot.scored
                if name in feature_users():
                    candidates &= snapshot.has_features
                    if reviews:
                        labels[~snapshot.has_features] = -1  # no features: neither fitted on nor judged
                else:
                    features = None
        if features is not None and not isinstance(features, RowFeatures):
            features = RowFeatures(features)  # one view for the ranking and the review's cache (mistakes)
        exclusive = self.exclusive(classes)
        with self.lock:
            now = time.time()
            self.reservations = {r: v for r, v in self.reservations.items() if v[1] > now}
            held = self.held_by_others(client, now)
            if len(held):
                candidates[held] = False
            self.calls += 1
            used = strategy if name != "random" or strategy == "random" else "random"
            ranking = active.rank(used, probabilities=probabilities, features=features, classes=classes,
                                  candidates=candidates, n=n, labels=labels,
                                  explore=0.0 if reviews else float(self.query["explore"]),
                                  sampling=self.query["sampling"],
                                  mix=float(self.query["mix"]), exclusive=exclusive,
                                  seed=self.seed + self.calls,
                                  schedule={**{key: self.query[key] for key in SCHEDULE_KEYS},
                                            "train": train})
            rows = [int(r) for r in ranking["row"]]
            for r, (c, _) in list(self.reservations.items()):
                if c == client:
                    del self.reservations[r]
            for r in rows:
                self.reservations[r] = (client, now + self.reserve_seconds)
        shown = strategy
        if name == "auto":  # which strategy auto handed this page to
            now = next((p for p in ranking["picked_by"] if p != "explore"), None)
            shown = f"auto ({now} now)" if now else strategy
        if used == "random":
            self.ordered_by = f"random over {subset}" + (f" ({strategy} waits: {why})" if why else "")
        elif reviews:
            self.ordered_by = f"{strategy} over {subset}, scored out of fold on the cached features"
        elif probabilities is None:
            self.ordered_by = f"{shown} over {subset}, on the cached features (no model yet)"
        else:
            self.ordered_by = f"{shown} over {subset}, scored by the {scored_by}"
        items = []
        scores = ranking["score"].to_numpy()
        picked = ranking["picked_by"].to_numpy()
        suspects = {} if not reviews or used == "random" else \
            _suspect_cells(features, labels, exclusive, classes, rows)
        with self.store.lock:
            for i, r in enumerate(rows):
                item = self.store.row(r)
                item["score"] = None if not np.isfinite(scores[i]) else round(float(scores[i]), 4)
                item["picked_by"] = str(picked[i])
                item["suspect"] = suspects.get(r)
                items.append(self.annotate(item, snapshot))
        return {"rows": items, "ordered_by": self.ordered_by, "candidates": int(candidates.sum()),
                "version": snapshot.version, "reserved_seconds": self.reserve_seconds}

    def annotate_all(self, items: list[dict]) -> list[dict]:
        """:meth:`annotate` every item with one snapshot of the learner's scores."""
        snapshot = self.learner.snapshot() if items else None
        return [self.annotate(item, snapshot) for item in items]

    def annotate(self, item: dict, snapshot=None) -> dict:
        """Add the model's probability per class (pre-annotation) to a row item."""
        snapshot = snapshot or self.learner.snapshot()
        p = snapshot.probabilities
        if p is not None and snapshot.scored is not None and snapshot.scored[item["row"]] \
                and snapshot.classes == list(item["labels"]):
            row = item["row"]
            item["probabilities"] = {c: round(float(p[row, j]), 3) for j, c in enumerate(snapshot.classes)}
        else:
            item["probabilities"] = None
        return item

    def check(self, client: str, rows: list[int]) -> None:
        """Refuse labels for rows another client holds; renew this client's hold on the others."""
        with self.lock:
            now = time.time()
            for r in rows:
                holder = self.reservations.get(r)
                if holder and holder[0] != client and holder[1] > now:
                    left = int(holder[1] - now)
                    raise RequestError(f"row {r} is being labelled by another annotator (reserved for "
                                       f"{left} s more); your hold on it had expired. Load the next images",
                                       409)
            for r in rows:
                if r in self.reservations:
                    self.reservations[r] = (client, now + self.reserve_seconds)

    def release(self, client: str) -> None:
        with self.lock:
            for r, (c, _) in list(self.reservations.items()):
                if c == client:
                    del self.reservations[r]


def _suspect_cells(features, labels: np.ndarray, exclusive, classes: list[str], rows: list[int]) -> dict:
    """Row -> its likeliest wrong cell (the highest scored suspect) among ``rows``, from the review
    the ``mistakes`` strategy ranked them by (its cache: the same features, labels and groups)."""
    from patchcfg.active.strategies import Query
    from patchcfg.active.strategies.mistakes import review_of

    query = Query(label="mistakes", cls=None, rows=np.asarray(rows, int), probabilities=None,
                  features=features, labels=labels, exclusive=exclusive)
    suspects = review_of(query).suspects()  # most likely wrong first
    suspects = suspects[suspects["row"].isin(rows)].drop_duplicates("row")
    return {int(row): {"class": classes[int(cls)], "given": int(given), "p": round(float(p), 3)}
            for row, cls, given, p in suspects[["row", "class", "given", "p"]].itertuples(index=False)}
