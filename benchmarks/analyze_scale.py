"""Benchmark ``patchcfg analyze`` on a large synthetic experiment tree.

Generates 1,000 experiments x 5 folds x 50 epochs (two fine-tuning stages) in a temp folder, a
sweep over four config keys with five seeds each and a few failed or running runs, then times the
analysis: discovery, reading, aggregation and formatting the table. Generation is not timed.

Prints one JSON line:
``{"benchmark": "analyze_scale", "experiments": 1000, "folds": 5, "epochs": 50, "seconds": ...}``

    python benchmarks/analyze_scale.py [--experiments N] [--folds K] [--epochs E] [--target S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = """\
name: {name}
seed: {seed}
data:
  labels: data/demo/labels.csv
  images: data/demo/images
  imshape: [32, 32]
  channels: 3
  on_bad_image: error
backbone: {{name: resnet18, width: {width}, weights: null}}
augmentation: {{preset: simclr}}
distribute: {{strategy: auto}}
pretrain:
  method: simclr
  temperature: {temperature}
  epochs: 100
  batch_size: 256
  optimizer: {{name: adam, lr: 1.0e-3, weight_decay: 0, schedule: warmup_cosine, warmup_epochs: 5}}
  monitor: {{every: 1}}
finetune:
  encoder: pretrain
  head: {{type: mlp, units: [128], dropout: {dropout}}}
  output: {{type: sigmoid}}
  loss: masked_bce+0.1*dice
  sampler: {{type: stratified, weighting: class, negatives: real}}
  folds_count: {folds}
  primary_metric: val_macro_auc
  primary_metric_mode: max
  callbacks: {{EarlyStopping: {{patience: 5, monitor: val_loss}}}}
  stages:
    - {{epochs: {half}, lr: {lr}}}
    - {{epochs: {half}, lr: 1.0e-4, unfreeze_encoder: true}}
"""

SWEEP = {
    "temperature": [0.05, 0.1, 0.2, 0.5, 1.0],
    "lr": [1.0e-3, 3.0e-4, 1.0e-4, 3.0e-5],
    "width": [0.25, 0.5, 0.75, 1.0, 2.0],
    "dropout": [0.0, 0.5],
}


def _metrics_csv(rng: np.random.Generator, folds: int, epochs: int) -> str:
    """One metrics.csv: epoch, fold, stage, loss, val_loss, val_macro_auc, val_accuracy, lr."""
    epoch = np.tile(np.arange(epochs), folds)
    fold = np.repeat(np.arange(folds), epochs)
    stage = (epoch >= epochs // 2).astype(int)
    decay = np.exp(-epoch / (epochs / 3))
    noise = rng.normal(0, 0.02, size=(4, epoch.size))
    columns = [
        epoch, fold, stage,
        0.3 + decay + noise[0], 0.35 + decay + noise[1],
        0.95 - 0.4 * decay + noise[2], 0.9 - 0.4 * decay + noise[3],
        np.where(stage == 0, 1e-3, 1e-4),
    ]
    table = np.column_stack(columns)
    body = "\n".join(
        f"{int(r[0])},{int(r[1])},{int(r[2])},{r[3]:.6f},{r[4]:.6f},{r[5]:.6f},{r[6]:.6f},{r[7]:g}"
        for r in table
    )
    return "epoch,fold,stage,loss,val_loss,val_macro_auc,val_accuracy,lr\n" + body + "\n"


def generate(root: Path, experiments: int, folds: int, epochs: int, seed: int = 0) -> None:
    """Write ``experiments`` experiment folders (sweep x seeds) with a finetune stage each."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(*SWEEP.values()))
    for i in range(experiments):
        values = dict(zip(SWEEP, combos[(i // 5) % len(combos)], strict=True))
        name = "sweep.t-{temperature}.lr-{lr}.w-{width}.d-{dropout}".format(**values) + f".seed-{i % 5}.{i}"
        folder = root / "sweep" / name
        (folder / "finetune").mkdir(parents=True)
        text = CONFIG.format(name=name, seed=i % 5, folds=folds, half=epochs // 2, **values)
        (folder / "config.yaml").write_text(text)
        state = "failed" if i % 97 == 0 else "running" if i % 89 == 0 else "complete"
        status = {"state": state, "started": "2024-01-01T00:00:00", "ended": None,
                  "error": "ResourceExhaustedError: OOM" if state == "failed" else None}
        (folder / "finetune" / "status.json").write_text(json.dumps(status))
        (folder / "finetune" / "metrics.csv").write_text(_metrics_csv(rng, folds, epochs))
        (folder / "finetune" / "summary.json").write_text(json.dumps({"mean": {}, "std": {}}))


def run(experiments: int, folds: int, epochs: int) -> float:
    """Generate a tree, then time discovery + reading + aggregation + formatting."""
    from patchcfg.analyze import analyze, render

    with tempfile.TemporaryDirectory(prefix="analyze_scale_") as tmp:
        generate(Path(tmp), experiments, folds, epochs)
        start = time.perf_counter()
        result = analyze([tmp])
        text = render(result, "table")
        seconds = time.perf_counter() - start
    if not result.rows or not text:
        raise SystemExit("analyze returned nothing")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--target", type=float, default=5.0, help="seconds the analysis may take")
    args = parser.parse_args(argv)
    seconds = run(args.experiments, args.folds, args.epochs)
    print(json.dumps({
        "benchmark": "analyze_scale", "experiments": args.experiments, "folds": args.folds,
        "epochs": args.epochs, "seconds": round(seconds, 3), "target_seconds": args.target,
        "ok": seconds <= args.target,
    }))
    return 0 if seconds <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
