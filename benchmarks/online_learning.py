"""Online learning in the labelling app: how many labels to reach 95% of the full-label accuracy?

1. The demo digits (``patchcfg demo``'s 1,797 images; ``configs/demo.yaml``: entropy with 20%
   exploration) as ten exclusive classes (``finetune.output.type: softmax``). The demo's ~10%
   validation rows keep their labels (the held-out set); every other row starts unknown.
2. Features: the embed stage of ``configs/demo.yaml`` with no pretraining, i.e. the backbone
   (ResNet-18, width 0.5) as initialised, untrained; computed once, shared by every run.
3. Full-label accuracy: the quick head fitted on the true labels of every training row, scored on
   the validation rows (argmax accuracy).
4. For each seed and each order (the app's default strategy with its exploration, and random),
   a real ``patchcfg label`` server (``label.retrain_every: 10``) and a simulated annotator that
   asks ``GET /api/queue?n=10``, answers each image from the true digit with ``POST /api/label``,
   and waits for the refit that follows (so each batch is ranked by the newest model). The
   learning curve of the app (``learning_curve.csv``) gives the labels at which the validation
   accuracy first reaches 95% of the full-label accuracy (null per seed when never; the mean
   counts such a run as ``--max-labels``, so it is then a lower bound).
5. Label latency: POSTs with no refit running against POSTs while refits run back to back.

Prints one JSON line and writes the learning-curve PNG. Run from the repository root::

    python benchmarks/online_learning.py [--seeds 5 --max-labels 300 --png docs/online_learning.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from label_app import client, start  # noqa: E402  (a real server, and a keep-alive client)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_table(demo: Path, out: Path) -> tuple[Path, np.ndarray]:
    """The demo images as a table of ten exclusive classes: validation rows labelled, the rest unknown."""
    import pandas as pd
    from sklearn.datasets import load_digits

    target = load_digits().target
    demo_table = pd.read_csv(demo / "labels.csv", dtype=str, keep_default_na=False)
    validation = demo_table["validation"].str.lower() == "true"
    frame = pd.DataFrame({"filepath": [str((demo / p).resolve()) for p in demo_table["filepath"]],
                          "exclude": "False", "validation": np.where(validation, "True", "False")})
    for d, name in enumerate(DIGITS):
        frame[name] = np.where(validation, (target == d).astype(int).astype(str), "")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return out, target


def write_config(folder: Path, name: str, labels: Path, seed: int, retrain_every: int) -> Path:
    import yaml

    config = {"extends": str(ROOT / "configs" / "demo.yaml"), "name": name, "seed": seed,
              "data": {"labels": str(labels)}, "finetune": {"output": {"type": "softmax"}},
              "label": {"retrain_every": retrain_every}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def features_once(work: Path, labels: Path) -> Path:
    """The embed stage's features (untrained backbone), computed once; returns the embed folder."""
    from patchcfg.config import load_config
    from patchcfg.stages import run_embed

    config = load_config(write_config(work, "features", labels, 0, 10))
    started = time.perf_counter()
    run_embed(config, root=work / "experiments", verbose=0, log=lambda text: None)
    print(f"features: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return work / "experiments" / "features" / "embed"


def full_label_accuracy(embed: Path, labels: Path, target: np.ndarray) -> float:
    from patchcfg import active
    from patchcfg.embed import load_features
    from patchcfg.label.learner import validation_metrics
    from patchcfg.labels import read_label_table

    features, paths = load_features(embed.parent)
    table = read_label_table(labels)
    where = {p: i for i, p in enumerate(paths)}
    x = features[[where[p] for p in table.resolved_paths()]]
    y = np.stack([(target == d).astype(np.float32) for d in range(10)], axis=1)
    train = table.train_rows()
    p = active.quick_head_probabilities(x, y, train, seed=0)
    return float(validation_metrics(p, y, table.validation, DIGITS, exclusive=True)["val_accuracy"])


def annotate(work: Path, embed: Path, table: Path, target: np.ndarray, strategy: str, seed: int,
             max_labels: int) -> list[dict]:
    """One simulated session on a real server; returns its learning curve."""
    import pandas as pd

    name = f"{'app' if strategy != 'random' else 'random'}-{seed}"
    folder = work / name
    folder.mkdir()
    labels = folder / "labels.csv"
    shutil.copy(table, labels)
    root = folder / "experiments"
    shutil.copytree(embed, root / name / "embed")
    proc, base, token, _ = start(write_config(folder, name, labels, seed, 10), root)
    http = client(base, token)
    try:
        def state():
            return http.get("/api/state").json()["model"]

        deadline = time.time() + 60
        while state()["version"] < 1 and time.time() < deadline:  # the fit at start
            time.sleep(0.05)
        labelled = 0
        while labelled < max_labels:
            query = http.get("/api/queue", params={"strategy": strategy, "n": 10}).json()
            for item in query["rows"]:
                digit = int(target[item["row"]])
                changes = {c: int(d == digit) for d, c in enumerate(DIGITS)}
                reply = http.post("/api/label", json={"row": item["row"], "changes": changes})
                reply.raise_for_status()
            labelled += len(query["rows"])
            deadline = time.time() + 60
            while time.time() < deadline:  # the refit these ten labels started
                model = state()
                if not model["fitting"] and model["curve"] and model["curve"][-1]["labels"] >= labelled:
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"{name}: no refit after {labelled} labels")
    finally:
        http.close()
        proc.terminate()
        proc.wait(30)
    curve = pd.read_csv(root / name / "label" / "learning_curve.csv")
    return curve[["labels", "val_accuracy", "version"]].to_dict("records")


def labels_to(curve: list[dict], target: float) -> int | None:
    """The labels at the first point reaching ``target`` (None: never, within the run)."""
    reached = (int(p["labels"]) for p in curve if p["labels"] > 0 and p["val_accuracy"] >= target)
    return next(reached, None)


def latency(work: Path, table: Path, embed: Path, posts: int) -> dict:
    """p50 / p95 label POST latency without a refit, and while refits run back to back."""
    folder = work / "latency"
    folder.mkdir()
    labels = folder / "labels.csv"
    shutil.copy(table, labels)
    root = folder / "experiments"
    shutil.copytree(embed, root / "latency" / "embed")
    proc, base, token, _ = start(write_config(folder, "latency", labels, 0, 0), root)
    http, side = client(base, token), client(base, token)
    refits = []
    try:
        while http.get("/api/state").json()["model"]["version"] < 1:
            time.sleep(0.05)
        query = http.get("/api/queue", params={"strategy": "random", "n": 2 * posts}).json()
        rows = [r["row"] for r in query["rows"]]
        for r in rows[:posts]:  # a few labels for the refits to fit on
            http.post("/api/label", json={"row": r, "changes": {c: int(c == DIGITS[r % 10]) for c in DIGITS}})

        def measure(batch):
            times = []
            for r in batch:
                t = time.perf_counter()
                http.post("/api/label", json={"row": r, "changes": {"zero": 0}}).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            return times

        quiet = measure(rows[posts:posts + posts // 2])
        busy = threading.Event()

        def refit_loop():
            while not busy.is_set():
                t = time.perf_counter()
                side.post("/api/retrain").raise_for_status()
                refits.append(time.perf_counter() - t)

        worker = threading.Thread(target=refit_loop)
        worker.start()
        time.sleep(0.5)
        during = measure(rows[posts + posts // 2:])
        busy.set()
        worker.join()
    finally:
        http.close()
        side.close()
        proc.terminate()
        proc.wait(30)
    return {"label_ms_p50_quiet": round(float(np.percentile(quiet, 50)), 2),
            "label_ms_p95_quiet": round(float(np.percentile(quiet, 95)), 2),
            "label_ms_p50_during_refits": round(float(np.percentile(during, 50)), 2),
            "label_ms_p95_during_refits": round(float(np.percentile(during, 95)), 2),
            "refit_seconds_p50": round(float(np.percentile(refits, 50)), 3), "refits_during": len(refits)}


def plot(curves: dict, target: float, full: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchcfg.atomic import atomic_write_figure

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, runs in curves.items():
        xs = sorted({int(p["labels"]) for run in runs for p in run})
        mean = [np.mean([next((p["val_accuracy"] for p in run if p["labels"] == x), np.nan) for run in runs])
                for x in xs]
        axis.plot(xs, mean, marker=".", label=label)
    axis.axhline(target, color="grey", linestyle="--",
                 label=f"target {target:.3f}: 95% of the full-label accuracy {full:.3f}")
    axis.set_xlabel("labels")
    axis.set_ylabel("validation accuracy (mean over seeds)")
    axis.set_title("patchcfg label: online learning on the demo digits")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    atomic_write_figure(path, figure)
    plt.close(figure)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-labels", type=int, default=300)
    parser.add_argument("--posts", type=int, default=60, help="label POSTs per latency measurement")
    parser.add_argument("--png", default="docs/online_learning.png")
    parser.add_argument("--work", default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from patchcfg.config import load_config

    started = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="patchcfg-online-"))
    demo = Path(load_config(ROOT / "configs" / "demo.yaml")["data"]["labels"]).parent
    if not (demo / "labels.csv").is_file():
        from patchcfg.demo import write_demo

        write_demo(demo)
    table, target = make_table(demo, work / "table" / "labels.csv")
    embed = features_once(work, table)
    full = full_label_accuracy(embed, table, target)
    goal = 0.95 * full
    strategy = load_config(ROOT / "configs" / "demo.yaml")["query"]["strategy"]
    curves = {f"app ({strategy}, explore 0.2)": [], "random": []}
    app_labels, random_labels = [], []
    for seed in range(args.seeds):
        orders = ((list(curves)[0], strategy, app_labels), ("random", "random", random_labels))
        for key, order, found in orders:
            curve = annotate(work, embed, table, target, order, seed, args.max_labels)
            curves[key].append(curve)
            found.append(labels_to(curve, goal))
            print(f"seed {seed} {order}: {found[-1]} labels", file=sys.stderr, flush=True)
    speed = latency(work, table, embed, args.posts)
    # A run that never reaches the target counts as --max-labels (a lower bound: the mean is too).
    app_mean = float(np.mean([n or args.max_labels for n in app_labels]))
    random_mean = float(np.mean([n or args.max_labels for n in random_labels]))
    plot(curves, goal, full, ROOT / args.png)
    result = {
        "benchmark": "online_learning",
        "data": "demo digits (1,797 images, 32x32), 10 exclusive classes, demo validation rows held out",
        "features": "embed stage, untrained ResNet-18 x0.5 (configs/demo.yaml, no pretraining)",
        "strategy": f"{strategy} + explore 0.2", "retrain_every": 10, "seeds": args.seeds,
        "full_label_accuracy": round(full, 4), "target_accuracy": round(goal, 4),
        "labels_to_target_app": app_mean, "labels_to_target_random": random_mean,
        "labels_saved": round(1 - app_mean / random_mean, 3),
        "app_per_seed": app_labels, "random_per_seed": random_labels, "max_labels": args.max_labels,
        "app_not_reached": app_labels.count(None), "random_not_reached": random_labels.count(None),
        **speed, "png": args.png, "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
