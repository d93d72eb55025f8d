"""Fine-tuning on the demo digits from a SimCLR encoder: validation macro AUC and accuracy.

Runs `configs/finetune.yaml` end to end (demo data, SimCLR pretraining, two-stage fine-tuning)
in a temporary experiments folder and prints one JSON line. Target: macro AUC >= 0.95 on the
validation rows. Accuracy is top-1 over the ten digit classes (rows fully labelled with one digit).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import numpy as np
    import pandas as pd

    from patchcfg.config import load_config
    from patchcfg.demo import DIGIT_CLASSES, write_demo
    from patchcfg.metrics import exclusive_accuracy
    from patchcfg.stages import run_finetune, run_pretrain

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        labels = write_demo(Path(tmp) / "demo")
        config = load_config(ROOT / "configs" / "finetune.yaml", [f"data.labels={labels}"])
        root = Path(tmp) / "experiments"
        pretrain = run_pretrain(config, root=root, verbose=0)
        pretrain_seconds = time.time() - started
        summary = run_finetune(config, root=root, verbose=0)
        predictions = pd.read_csv(root / config["name"] / "finetune" / "predictions.csv")
        truth = predictions[[f"y_{c}" for c in DIGIT_CLASSES]].fillna(-1).to_numpy()
        probabilities = predictions[[f"p_{c}" for c in DIGIT_CLASSES]].to_numpy()
        accuracy = exclusive_accuracy(truth, probabilities)
    auc = summary["mean"]["val_macro_auc"]
    print(json.dumps({
        "benchmark": "finetune_demo", "val_macro_auc": round(auc, 4), "target_val_macro_auc": 0.95,
        "ok": bool(auc >= 0.95), "val_digit_accuracy": round(float(accuracy), 4),
        "val_macro_accuracy": round(summary["mean"]["val_macro_accuracy"], 4),
        "probe_accuracy_after_pretrain": (pretrain.get("final") or {}).get("probe_accuracy"),
        "pretrain_seconds": round(pretrain_seconds, 1), "seconds": round(time.time() - started, 1),
        "validation_rows": int(np.sum(truth.max(axis=1) >= 0))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
