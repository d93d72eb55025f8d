"""patchcfg's SimCLR side by side with lightly's (PyTorch), the library a user would most likely pick
instead: images per second end to end and a linear probe at equal epochs.

Both train the same SimCLR (``../shared/peers/README.md``: small ResNet-18 at width 0.25, batch 128,
projection 256 -> 128, temperature 0.2, Adam with warmup-cosine, crops from 0.3 of the area, flips
and rot90, jitter 0.5 on 80%, blur on 30%) on the same 3,600 32-px digit images; ours with
``benchmarks/peer_lightly.yaml`` through ``patchcfg pretrain``, theirs with
``../shared/peers/lightly_simclr.py`` at each of ``--workers`` loader workers. The runs alternate
(ours, lightly, ours, lightly, ...) in one process, so a busy machine slows both alike. Throughput
is the median over the epochs after the first (tracing, worker start-up) of images / epoch seconds,
the input pipeline included; ``wall_seconds`` is the whole command. After each run the encoder's
pooled features of every row are scored by ``../shared/peers/probe.py`` (one logistic regression
for both).

One JSON line per run, then one with the medians, the ratio (goal: ours >= 1.5x lightly's best)
and the probes. Needs lightly in its own environment (``--peer-python``, ``$PATCHCFG_PEER_PYTHON``
or ``../peers-venv/bin/python``); without it, says how to create it and exits 0.

    python benchmarks/peer_lightly.py [--epochs 10] [--rounds 2] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_name("peer_lightly.yaml")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def beside_repository(relative: str) -> Path:
    """``../relative`` from the repository root, or from the nearest folder above that has it (a
    checkout in a subfolder); ``../relative`` when none has."""
    for folder in ROOT.parents:
        if (folder / relative).exists():
            return folder / relative
    return ROOT.parent / relative


def default_peer_python() -> Path:
    return Path(os.environ.get("PATCHCFG_PEER_PYTHON") or beside_repository("peers-venv/bin/python"))


def how_to_install(peer_python: Path, peers: Path) -> str:
    venv = peer_python.parent.parent if peer_python.parent.name == "bin" else beside_repository("peers-venv")
    return (f"peer_lightly: no peer environment at {peer_python}; create it with\n"
            f"  python3 -m venv {venv}\n"
            f'  {venv}/bin/pip install "torch===2.13.0" "torchvision==0.28.0" lightly scikit-learn pandas pillow\n'
            f"(about 5 GB; {peers / 'README.md'} explains the pins), or pass --peer-python.")


def write_images(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` 32-px RGB digits (scikit-learn's 1,797, each again shifted and tinted as needed) and a
    label table of one digit class per row: 10% of the digits validation, 20% of the rest labelled;
    every copy of a digit shares its split, so no validation image has a twin in training."""
    import pandas as pd
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    sources = len(digits.images)
    order = rng.permutation(sources)
    validation = np.zeros(sources, bool)
    validation[order[: sources // 10]] = True
    labelled = validation.copy()
    labelled[order[sources // 10:][: int(0.2 * (sources - sources // 10))]] = True
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        source, copy = i % sources, i // sources
        pixels = (digits.images[source] / 16.0 * 255.0).astype(np.uint8)
        image = np.asarray(Image.fromarray(pixels).resize((28, 28), Image.BILINEAR), np.float32)
        canvas = np.zeros((32, 32, 3), np.float32)
        dy, dx = (2, 2) if copy == 0 else rng.integers(0, 5, size=2)
        tint = np.ones(3) if copy == 0 else rng.uniform(0.5, 1.0, size=3)
        canvas[dy:dy + 28, dx:dx + 28] = image[..., None] * tint
        path = f"images/{i:05d}.png"
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(folder / path)
        row = {"filepath": path, "validation": bool(validation[source])}
        target = int(digits.target[source])
        row.update({name: (float(c == target) if labelled[source] else None) for c, name in enumerate(DIGITS)})
        rows.append(row)
    labels = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return labels


def steady_rate(rates: list[float]) -> float:
    """Images per second of a run: the median of its epochs after the first."""
    return float(statistics.median(rates[1:] if len(rates) > 1 else rates))


def probe(labels: Path, features: Path, peers: Path) -> dict:
    out = subprocess.run([sys.executable, str(peers / "probe.py"), str(labels), str(features)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_ours(labels: Path, work: Path, epochs: int, seed: int, name: str, precision: str | None) -> dict:
    """``patchcfg pretrain`` then ``patchcfg embed``; features in the label table's order."""
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    overrides = [f"data.labels={labels}", f"name={name}", f"seed={seed}", f"pretrain.epochs={epochs}"]
    overrides += [f"pretrain.mixed_precision={precision}"] if precision is not None else []
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "patchcfg.cli", "pretrain", str(CONFIG), *overrides,
                    "--experiments", str(work)], env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    subprocess.run([sys.executable, "-m", "patchcfg.cli", "embed", str(CONFIG), *overrides, "--encoder", "pretrain",
                    "--experiments", str(work)], env=env, check=True, capture_output=True, text=True)
    stage = work / name
    rates = pd.read_csv(stage / "pretrain" / "metrics.csv")["images_per_second"].tolist()
    summary = json.loads((stage / "pretrain" / "summary.json").read_text())
    index = [os.path.realpath(p) for p in pd.read_csv(stage / "embed" / "index.csv")["filepath"]]
    order = {path: row for row, path in enumerate(index)}
    table = [os.path.realpath(labels.parent / p) for p in pd.read_csv(labels)["filepath"]]
    features = np.load(stage / "embed" / "features.npy")[[order[p] for p in table]]
    np.save(stage / "features_in_table_order.npy", features)
    return {"images_per_second": steady_rate(rates), "epochs": rates, "wall_seconds": wall,
            "precision": summary["precision"], "features": stage / "features_in_table_order.npy"}


def run_lightly(peer_python: Path, peers: Path, labels: Path, work: Path, epochs: int, seed: int,
                workers: int) -> dict:
    features = work / f"lightly_s{seed}_w{workers}.npy"
    started = time.perf_counter()
    out = subprocess.run([str(peer_python), str(peers / "lightly_simclr.py"), str(labels), "--epochs", str(epochs),
                          "--workers", str(workers), "--seed", str(seed), "--out", str(features)],
                         check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    rates = [json.loads(line)["images_per_second"] for line in out.splitlines() if line.startswith("{")]
    return {"images_per_second": steady_rate(rates), "epochs": rates, "wall_seconds": wall, "features": features}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", type=Path, default=default_peer_python())
    parser.add_argument("--peers", type=Path, default=beside_repository("shared/peers"),
                        help="the folder of lightly_simclr.py and probe.py")
    parser.add_argument("--images", type=int, default=3600)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (each its own seed)")
    parser.add_argument("--workers", default="0,1,2", help="lightly's loader workers to try each round")
    parser.add_argument("--precision", default=None,
                        help="our pretrain.mixed_precision: auto, true or false (default: the schema's)")
    parser.add_argument("--work", type=Path, default=None, help="where data and runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.peer_python.is_file() or not (args.peers / "lightly_simclr.py").is_file():
        print(how_to_install(args.peer_python, args.peers))
        return 0
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="peer-lightly-") as temporary:
        work = args.work or Path(temporary)
        labels = write_images(work / "data", args.images)
        ours, theirs = [], []
        for round_ in range(args.rounds):
            result = run_ours(labels, work / "experiments", args.epochs, round_, f"ours-{round_}", args.precision)
            result["probe"] = probe(labels, result.pop("features"), args.peers)
            ours.append(result)
            print(json.dumps({"run": "patchcfg", "round": round_, **result}), flush=True)
            for count in workers:
                result = run_lightly(args.peer_python, args.peers, labels, work, args.epochs, round_, count)
                result["probe"] = probe(labels, result.pop("features"), args.peers)
                theirs.append({**result, "workers": count})
                print(json.dumps({"run": "lightly", "round": round_, "workers": count, **result}), flush=True)
    ours_rate = statistics.median(r["images_per_second"] for r in ours)
    best_workers = max(workers, key=lambda w: statistics.median(
        r["images_per_second"] for r in theirs if r["workers"] == w))
    best = [r for r in theirs if r["workers"] == best_workers]
    theirs_rate = statistics.median(r["images_per_second"] for r in best)
    print(json.dumps({
        "benchmark": "peer_lightly", "images": args.images, "epochs": args.epochs, "rounds": args.rounds,
        "precision": ours[0]["precision"],
        "patchcfg_images_per_second": round(ours_rate, 1),
        "lightly_images_per_second": round(theirs_rate, 1), "lightly_workers": best_workers,
        "ratio": round(ours_rate / theirs_rate, 3), "goal_ratio": 1.5,
        "patchcfg_probe_acc": [r["probe"]["probe_acc"] for r in ours],
        "lightly_probe_acc": [r["probe"]["probe_acc"] for r in best],
        "patchcfg_wall_seconds": [round(r["wall_seconds"], 1) for r in ours],
        "lightly_wall_seconds": [round(r["wall_seconds"], 1) for r in best],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
