"""Fine-tuning on the demo digits from a SimCLR encoder: validation macro AUC and digit accuracy,
with output groups (a softmax group for the ten digits, a sigmoid group for even and loop: what
`configs/finetune.yaml` declares) and with the all-sigmoid model (``finetune.outputs=null``).

Runs the demo data and SimCLR pretraining once, then fine-tunes both ways from that encoder for
every seed, in a temporary experiments folder, and prints one JSON line. Target: macro AUC >= 0.95
on the validation rows. Digit accuracy is top-1 over the ten digit classes (rows fully labelled
with one digit). Extra arguments are config overrides for every run (shorter runs:
``pretrain.epochs=4 'finetune.stages=[{epochs: 4, lr: 3.0e-3}]'``); ``--seeds 0,1,2`` picks the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"groups": [], "sigmoid": ["finetune.outputs=null"]}


def main(argv=None) -> int:
    import numpy as np
    import pandas as pd

    from patchcfg.config import load_config
    from patchcfg.demo import DIGIT_CLASSES, write_demo
    from patchcfg.metrics import exclusive_accuracy
    from patchcfg.stages import run_finetune, run_pretrain

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    results: dict = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        labels = write_demo(Path(tmp) / "demo")
        path = ROOT / "configs" / "finetune.yaml"
        base = load_config(path, [f"data.labels={labels}", *args.overrides])
        root = Path(tmp) / "experiments"
        pretrain = run_pretrain(base, root=root, verbose=0)
        pretrain_seconds = time.time() - started
        encoder = root / base["name"] / "pretrain" / "encoder.keras"
        for way, extra in WAYS.items():
            for seed in seeds:
                config = load_config(path, [f"data.labels={labels}", *args.overrides, *extra, f"seed={seed}",
                                            f"name={base['name']}-{way}-{seed}", f"finetune.encoder={encoder}"])
                summary = run_finetune(config, root=root, verbose=0)
                predictions = pd.read_csv(root / config["name"] / "finetune" / "predictions.csv")
                truth = predictions[[f"y_{c}" for c in DIGIT_CLASSES]].fillna(-1).to_numpy()
                probabilities = predictions[[f"p_{c}" for c in DIGIT_CLASSES]].to_numpy()
                results[way].append({"seed": seed, "val_digit_accuracy": exclusive_accuracy(truth, probabilities),
                                     "val_macro_auc": summary["mean"]["val_macro_auc"]})
    report: dict = {"benchmark": "finetune_demo", "target_val_macro_auc": 0.95, "seeds": seeds,
                    "overrides": args.overrides}
    for way, runs in results.items():
        for key in ("val_digit_accuracy", "val_macro_auc"):
            values = np.array([r[key] for r in runs])
            report[f"{way}_{key}"] = [round(float(v), 4) for v in values]
            report[f"{way}_{key}_mean"] = round(float(values.mean()), 4)
    report["ok"] = bool(report["groups_val_macro_auc_mean"] >= 0.95)
    report["groups_digit_accuracy_at_least_sigmoid"] = bool(
        report["groups_val_digit_accuracy_mean"] >= report["sigmoid_val_digit_accuracy_mean"])
    report.update({"probe_accuracy_after_pretrain": (pretrain.get("final") or {}).get("probe_accuracy"),
                   "pretrain_seconds": round(pretrain_seconds, 1), "seconds": round(time.time() - started, 1),
                   "validation_rows": int(np.sum(truth.max(axis=1) >= 0))})
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
