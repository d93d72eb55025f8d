"""Finding label mistakes on the demo digits: precision and recall of the review queue.

1. ``patchcfg demo`` writes the 1,797 digit images and their label table (classes zero..nine,
   exclusive, plus even and loop; about a fifth of the rows labelled, some partially) into a
   temporary folder. ``--full`` labels every cell of every row instead.
2. Features: the raw pixels of the demo's PNGs (32x32, grey: 1,024 values), or with
   ``--features encoder`` the demo encoder's cached features (``experiments/digits-demo/embed``,
   written by ``patchcfg embed configs/demo.yaml``); the JSON says which.
3. Per seed, 5% of the table's known cells are flipped at random: a cell of even or loop, or a
   digit cell of a row whose digit is not fully known, turns 0 <-> 1; a digit cell of a row whose
   ten digit cells are known moves the row's 1 (to that cell, or from it to another digit drawn
   at random): two cells change. ``k`` is the number of cells changed.
4. :func:`patchcfg.active.review.review_labels` (out-of-fold quick head, 5 folds, confident
   learning; the demo config's output groups, so the ten digits are one softmax group) ranks the
   suspect cells; the top k are the review queue. Precision = flipped cells
   among the queue / its length; recall = flipped cells in the queue / k.
5. With cleanlab importable (not a dependency; ``--cleanlab``), its binary ``find_label_issues``
   (``prune_by_noise_rate``) per class on the same out-of-fold probabilities -- what its
   multi-label ``find_multilabel_issues_per_class`` does, restricted to the known cells -- ranked
   by self-confidence, is measured on the same flips (also cut to the length of our queue).

One JSON line per seed, then one with the means, the goal (mean precision >= 0.8) and whether
it was met; the exit status is 1 when it was not. Run from the repository root::

    python benchmarks/label_errors.py [--seeds 5 --rate 0.05 --folds 5 --full --cleanlab]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np  # noqa: E402

EMBED = Path("experiments/digits-demo/embed")
GOAL = 0.8


def demo_table(folder: Path, full: bool):
    """(label table, digit of each row) of the demo written into ``folder``."""
    from sklearn.datasets import load_digits

    from patchcfg.demo import CLASSES, digit_labels, write_demo
    from patchcfg.label_table import read_label_table

    table = read_label_table(write_demo(folder))
    digits = load_digits().target
    if full:
        for c in CLASSES:
            table.df[c] = [digit_labels(int(d))[c] for d in digits]
    return table, digits


def load_features(table, choice: str):
    """(features over the table's rows, "pixels" | "encoder")."""
    if choice == "encoder":
        import pandas as pd

        if not (EMBED / "features.npy").is_file():
            raise SystemExit(f"{EMBED}/features.npy is missing: run `patchcfg embed configs/demo.yaml` first")
        cached = np.load(EMBED / "features.npy")
        where = {int(re.search(r"digit_(\d+)", p).group(1)): i
                 for i, p in enumerate(pd.read_csv(EMBED / "index.csv")["filepath"].astype(str))}
        rows = [where[int(re.search(r"digit_(\d+)", p).group(1))] for p in table.df["filepath"]]
        return cached.reshape(len(cached), -1)[rows].astype(np.float32), "encoder"
    from PIL import Image

    pixels = [np.asarray(Image.open(p).convert("L"), np.float32).ravel() / 255 for p in table.resolved_paths()]
    return np.stack(pixels), "pixels"


def output_groups(classes):
    """The demo config's output groups over ``classes`` (the digit: one softmax group)."""
    from patchcfg.config import load_config
    from patchcfg.models.outputs import scoring_groups

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    return scoring_groups(config.get("finetune"), list(classes))


def flip(labels: np.ndarray, rate: float, digit_columns: list[int], rng) -> tuple[np.ndarray, set]:
    """(noisy labels, the (row, class) cells changed): ``rate`` of the known cells, as the module says."""
    noisy = labels.copy()
    known = np.argwhere(labels >= 0)
    target = int(round(rate * len(known)))
    one_hot = (labels[:, digit_columns] >= 0).all(axis=1) & ((labels[:, digit_columns] == 1).sum(axis=1) == 1)
    changed, moved = set(), set()
    for row, col in known[rng.permutation(len(known))]:
        if len(changed) >= target:
            break
        row, col = int(row), int(col)
        if (row, col) in changed:
            continue
        if col in digit_columns and one_hot[row]:
            if row in moved:
                continue
            current = digit_columns[int(np.argmax(labels[row, digit_columns] == 1))]
            new = col if col != current else int(rng.choice([d for d in digit_columns if d != current]))
            noisy[row, current], noisy[row, new] = 0, 1
            changed |= {(row, current), (row, new)}
            moved.add(row)
        else:
            noisy[row, col] = 1 - labels[row, col]
            changed.add((row, col))
    return noisy, changed


def scores(picked: list[tuple[int, int]], changed: set) -> dict:
    hits = sum(cell in changed for cell in picked)
    return {"queue": len(picked), "hits": hits,
            "precision": round(hits / len(picked), 4) if picked else 0.0,
            "recall": round(hits / len(changed), 4) if changed else 0.0}


def cleanlab_queue(review, noisy: np.ndarray, k: int) -> list[tuple[int, int]]:
    """cleanlab's per-class binary issues (prune_by_noise_rate) on the judged known cells of
    ``review``, ranked by self-confidence; the top k."""
    from cleanlab.filter import find_label_issues

    cells = review.cells
    found = []
    for c in np.unique(cells["class"]):
        part = cells[cells["class"] == c]
        given = part["given"].to_numpy()
        if given.min() == given.max():
            continue
        p = part["p"].to_numpy()
        issues = find_label_issues(labels=given, pred_probs=np.c_[1 - p, p], filter_by="prune_by_noise_rate")
        found += [(1 - (p[i] if given[i] else 1 - p[i]), int(r), int(c))
                  for i, r in zip(np.flatnonzero(issues), part["row"].to_numpy()[issues], strict=True)]
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(r, c) for _, r, c in found[:k]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.05, help="fraction of the known cells flipped")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--method", choices=["confident_joint", "prune_by_noise_rate", "threshold"],
                        default="confident_joint")
    parser.add_argument("--features", choices=["pixels", "encoder"], default="pixels")
    parser.add_argument("--full", action="store_true", help="label every cell of the demo table first")
    parser.add_argument("--outputs", choices=["config", "multi-hot"], default="config",
                        help="config: the demo config's output groups (the digit a softmax group), as "
                             "`patchcfg labels review configs/demo.yaml` sees them; multi-hot: every class alone")
    parser.add_argument("--cleanlab", choices=["auto", "yes", "no"], default="auto",
                        help="also measure cleanlab (auto: when it is importable)")
    parser.add_argument("--goal", type=float, default=GOAL, help="the mean precision to reach")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    from patchcfg.active.review import review_labels
    from patchcfg.demo import DIGIT_CLASSES

    use_cleanlab = args.cleanlab == "yes"
    if args.cleanlab == "auto":
        try:
            import cleanlab  # noqa: F401
            use_cleanlab = True
        except ImportError:
            pass

    with tempfile.TemporaryDirectory() as folder:
        table, _ = demo_table(Path(folder), args.full)
        features, kind = load_features(table, args.features)
    labels = table.label_matrix()
    exclusive = output_groups(table.classes) if args.outputs == "config" else False
    digit_columns = [table.classes.index(c) for c in DIGIT_CLASSES]
    rows = np.flatnonzero((labels >= 0).any(axis=1) & ~table.exclude)
    results, theirs = [], []
    for seed in range(args.seeds):
        started = time.perf_counter()
        noisy, changed = flip(labels, args.rate, digit_columns, np.random.default_rng(seed))
        review = review_labels(features, noisy, rows, folds=args.folds, seed=seed, method=args.method,
                               exclusive=exclusive)
        top = review.suspects(len(changed))
        line = {"benchmark": "label_errors", "seed": seed, "features": kind, "rows": len(rows),
                "known_cells": int((labels >= 0).sum()), "flipped": len(changed),
                "suspects": int(review.cells["suspect"].sum()), "C": review.C,
                **scores(list(zip(top["row"].tolist(), top["class"].tolist(), strict=True)), changed),
                "seconds": round(time.perf_counter() - started, 2)}
        if use_cleanlab:
            queue = cleanlab_queue(review, noisy, len(changed))
            line["cleanlab"] = scores(queue, changed)
            line["cleanlab"]["precision_at_our_length"] = scores(queue[:len(top)], changed)["precision"]
            theirs.append(line["cleanlab"])
        results.append(line)
        print(json.dumps(line), flush=True)
    precision = float(np.mean([r["precision"] for r in results]))
    summary = {"benchmark": "label_errors", "seed": "mean", "seeds": args.seeds, "features": kind,
               "full": args.full, "outputs": args.outputs, "method": args.method, "folds": args.folds, "rate": args.rate,
               "rows": len(rows), "flipped": round(float(np.mean([r["flipped"] for r in results])), 1),
               "precision": round(precision, 4),
               "recall": round(float(np.mean([r["recall"] for r in results])), 4),
               "goal_precision": args.goal, "goal_met": bool(precision >= args.goal)}
    if theirs:
        summary["cleanlab"] = {key: round(float(np.mean([r[key] for r in theirs])), 4)
                               for key in ("precision", "recall", "precision_at_our_length")}
    summary["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(summary), flush=True)
    return 0 if summary["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
