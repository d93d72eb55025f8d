"""Active learning on the demo digits: how many labels does each query strategy need?

Simulated labelling rounds on a 10-class problem (exclusive classes: the digit):

1. Features: the demo encoder's cached features (``experiments/digits-demo/embed/features.npy``
   with ``index.csv``, written by ``patchcfg embed``) if present, else the raw 64 pixels of
   ``sklearn.datasets.load_digits``. The JSON says which (``"features": "encoder" | "pixels"``).
2. A fixed, seeded 30% of the rows is the test split; the rest is the pool.
3. For each strategy and seed: 20 random labels, then rounds of +20 picked by
   :func:`patchcfg.active.rank` (softmax probabilities of the current model, the standardised
   features as the penultimate layer) up to 200. The model is a logistic regression on the
   standardised features; after each round it is scored on the test split.
4. Per strategy, averaged over seeds: the labels needed for the mean learning curve to reach 95%
   of the full-label accuracy (every pool row labelled; null if not within the budget), and the
   area under the learning curve (mean test accuracy over the rounds).

Prints one JSON line. Run from the repository root::

    python benchmarks/active_learning.py [--seeds 5 --start 20 --step 20 --budget 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np  # noqa: E402

from patchcfg.active import rank  # noqa: E402

EMBED = Path("experiments/digits-demo/embed")
STRATEGIES = {  # name in the report: (strategy, explore)
    "random": ("random", 0.0),
    "entropy": ("entropy", 0.0),
    "margin": ("margin", 0.0),
    "least_confidence": ("least_confidence", 0.0),
    "badge": ("badge", 0.0),
    "diversity": ("diversity", 0.0),
    "margin+explore0.2": ("margin", 0.2),
}
CLASSES = [str(d) for d in range(10)]


def load_features(choice: str):
    """(features, digit targets, "encoder" | "pixels")."""
    from sklearn.datasets import load_digits

    targets = load_digits().target
    found = (EMBED / "features.npy").is_file() and (EMBED / "index.csv").is_file()
    if choice == "encoder" or (choice == "auto" and found):
        import pandas as pd

        features = np.load(EMBED / "features.npy")
        paths = pd.read_csv(EMBED / "index.csv")["filepath"].astype(str)
        index = np.array([int(re.search(r"digit_(\d+)", p).group(1)) for p in paths])
        return features.reshape(len(features), -1).astype(np.float64), targets[index], "encoder"
    return load_digits().data.astype(np.float64), targets, "pixels"


def fit(x, y):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(max_iter=1000, C=1.0).fit(x, y)


def probabilities(model, x):
    """Softmax outputs over all 10 digits (a digit not labelled yet gets 0)."""
    out = np.zeros((len(x), len(CLASSES)))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def learning_curve(strategy, explore, x_pool, y_pool, x_test, y_test, seed, start, step, budget):
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(x_pool), bool)
    labelled[rng.choice(len(x_pool), start, replace=False)] = True
    curve = []
    for round_ in range(10_000):
        model = fit(x_pool[labelled], y_pool[labelled])
        curve.append(float(np.mean(model.predict(x_test) == y_test)))
        if labelled.sum() + step > budget:
            return curve
        labels = -np.ones((len(x_pool), len(CLASSES)))
        labels[labelled] = np.eye(len(CLASSES))[y_pool[labelled]]
        picks = rank(strategy, probabilities=probabilities(model, x_pool), features=x_pool,
                     classes=CLASSES, candidates=~labelled, n=step, labels=labels, explore=explore,
                     exclusive=True, seed=seed * 1000 + round_)
        labelled[picks["row"].to_numpy()] = True
    return curve


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--target", type=float, default=0.95, help="fraction of the full-label accuracy")
    parser.add_argument("--features", choices=["auto", "encoder", "pixels"], default="auto")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    from sklearn.preprocessing import StandardScaler

    x, y, kind = load_features(args.features)
    order = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(args.test_fraction * len(x)))
    test, pool = order[:n_test], order[n_test:]
    scaler = StandardScaler().fit(x[pool])
    x_pool, x_test = scaler.transform(x[pool]), scaler.transform(x[test])
    y_pool, y_test = y[pool], y[test]
    full = float(np.mean(fit(x_pool, y_pool).predict(x_test) == y_test))
    target = args.target * full
    sizes = list(range(args.start, args.budget + 1, args.step))

    results = {}
    for name, (strategy, explore) in STRATEGIES.items():
        curves = np.array([learning_curve(strategy, explore, x_pool, y_pool, x_test, y_test, seed,
                                          args.start, args.step, args.budget) for seed in range(args.seeds)])
        mean = curves.mean(axis=0)
        reached = [next((s for s, a in zip(sizes, c, strict=True) if a >= target), None) for c in curves]
        hit = np.flatnonzero(mean >= target)
        auc = curves.mean(axis=1)
        results[name] = {
            "labels_to_target": sizes[hit[0]] if len(hit) else None,
            "labels_to_target_per_seed": reached,
            "auc": round(float(auc.mean()), 4),
            "auc_std": round(float(auc.std(ddof=1)) if len(auc) > 1 else 0.0, 4),
            "final_accuracy": round(float(mean[-1]), 4),
            "curve": [round(float(a), 3) for a in mean],
        }
    best = max(results, key=lambda k: results[k]["auc"])
    print(json.dumps({
        "benchmark": "active_learning",
        "features": kind,
        "dims": int(x.shape[1]),
        "pool": len(pool),
        "test": len(test),
        "seeds": args.seeds,
        "labels": sizes,
        "full_accuracy": round(full, 4),
        "target_accuracy": round(target, 4),
        "strategies": results,
        "best": best,
        "best_beats_random": bool(best != "random" and results[best]["auc"] > results["random"]["auc"]),
        "seconds": round(time.perf_counter() - began, 1),
    }))
    return results


if __name__ == "__main__":
    main()
