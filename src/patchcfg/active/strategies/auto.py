"""``auto``: a cold-start strategy first, another strategy once the labels reach a budget.

With tens of labels a model is too weak to be uncertain about the right things, and typicality or
coverage wins; past a budget uncertainty takes over (Hacohen, Dekel & Weinshall, ICML 2022,
"Active Learning on a Budget: Opposite Strategies Suit High and Low Budgets"). The schedule is the
query section's ``cold_start`` (e.g. ``typiclust``), ``then`` (e.g. ``badge``: uncertain and
mutually different rows, Ash et al., ICLR 2020) and ``handover`` (labelled rows the model trains on, not
validation or excluded ones; null: ``handover_per_class`` times the number of classes). The cold
start sees the same training rows: a region whose only labels are validation labels still counts
as unlabelled (the papers' labelled set is the training set). Each pick's ``picked_by`` names the
strategy that made it. Before the handover without features, and after it without probabilities,
it takes what it can: the cold start without a model, ``random`` without either (or when ``then``
needs the features and there are none).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from patchcfg.active.strategies import Strategy, get_strategy, register


def handover_labels(schedule: dict, n_classes: int) -> int:
    """The labelled rows at which ``auto`` hands over: ``handover``, else ``handover_per_class`` per class."""
    if schedule.get("handover") is not None:
        return int(schedule["handover"])
    return int(schedule["handover_per_class"]) * max(1, int(n_classes))


def labelled_rows(labels: np.ndarray | None, train: np.ndarray | None = None) -> int:
    """Rows with at least one known cell, among the ``train`` rows when given (validation and
    excluded rows teach the model nothing)."""
    if labels is None:
        return 0
    known = (np.asarray(labels) >= 0).any(axis=1)
    return int((known & train).sum() if train is not None else known.sum())


def phase(schedule: dict, labels, n_classes: int, probabilities, features) -> tuple[str, str]:
    """``(strategy name, why)``: what ``auto`` runs now and why, in words."""
    budget = handover_labels(schedule, n_classes)
    done = labelled_rows(labels, schedule.get("train"))
    cold, then = schedule["cold_start"], schedule["then"]
    if done >= budget and probabilities is not None:
        if features is None and "features" in get_strategy(schedule["parsed"][then][0]).needs:
            return "random", f"{done} labelled rows >= {budget}; {then} needs the cached features"
        return then, f"{done} labelled rows >= {budget}: {then}"
    if done >= budget:
        why = f"{done} labelled rows >= {budget}, but no scores yet for {then}"
    else:
        why = f"{done} of {budget} labelled rows before {then}"
    cold_strategy = get_strategy(schedule["parsed"][cold][0])
    if features is None and "features" in cold_strategy.needs:
        return "random", f"{why}; {cold} needs the cached features"
    return cold, f"{why}: {cold}"


@register
class Auto(Strategy):
    name = "auto"
    needs = ()
    uses_features = True
    uses_probabilities = True
    ranks_first = "typical, covering rows first (the cold start), then the `then` strategy once the labels reach the budget"
    sigmoid_score = "the score of the strategy in charge (picked_by names it)"
    softmax_score = "same"
    needs_text = "features before the handover, then what `then` needs (else what it has)"

    def check(self, label, probabilities, features, mix):
        return None  # takes what it can (see the module)

    def select(self, query, k, rng):
        schedule = query.schedule
        n_classes = query.labels.shape[1] if query.labels is not None else (
            query.probabilities.shape[1] if query.probabilities is not None else 1)
        label, _ = phase(schedule, query.labels, n_classes, query.probabilities, query.features)
        name, cls = schedule["parsed"][label]
        return get_strategy(name).select(replace(query, label=label, cls=cls), k, rng)
