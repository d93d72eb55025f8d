"""Label efficiency on the demo digits: does SimCLR pretraining help a 10-labels-per-class probe?

1. Pretrain SimCLR (``configs/simclr.yaml``'s recipe, more epochs) on all 1,797 demo images, with
   a CPU time budget (default 10 minutes): training stops after the epoch that would overrun it.
2. Frozen pooled features of every image from (a) that encoder and (b) randomly initialised
   encoders of the same architecture.
3. For each of 3 seeds: draw 10 labelled images per digit, fit a logistic regression on their
   features, score accuracy on all the other images. Report the mean over the seeds (the random
   encoder is re-initialised with each seed).

Prints one JSON line. Run from the repository root::

    python benchmarks/label_efficiency.py [--budget 600 --epochs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def probe_accuracy(features, targets, per_class: int, seed: int) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(targets == c), per_class, replace=False)
                            for c in np.unique(targets)])
    test = np.setdiff1d(np.arange(len(targets)), train)
    scaler = StandardScaler().fit(features[train])
    model = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(features[train]), targets[train])
    return float(np.mean(model.predict(scaler.transform(features[test])) == targets[test]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/simclr.yaml")
    parser.add_argument("--budget", type=float, default=600.0, help="pretraining CPU budget, seconds")
    parser.add_argument("--epochs", type=int, default=90, help="epochs of the schedule (stops early on budget)")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--experiments", default=None, help="keep the run here (default: a temp folder)")
    args = parser.parse_args(argv)

    from patchcfg.config import load_config

    config = load_config(args.config, [f"pretrain.epochs={args.epochs}", "pretrain.monitor.every=0",
                                       "name=label-efficiency", "distribute.strategy=default"])
    labels = Path(config["data"]["labels"])
    if not labels.is_file():
        from patchcfg.demo import write_demo

        write_demo(labels.parent)

    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from patchcfg.data.loading import load_images
    from patchcfg.models.backbones import build_backbone
    from patchcfg.stages import run_pretrain

    class Budget(keras.callbacks.Callback):
        """Stop after the epoch when another epoch would overrun the budget."""

        def on_train_begin(self, logs=None):
            self.start, self.last = time.perf_counter(), time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if now - self.start + (now - self.last) > args.budget:
                self.model.stop_training = True
            self.last = now

    root = args.experiments or tempfile.mkdtemp(prefix="patchcfg-label-efficiency-")
    started = time.perf_counter()
    summary, method = run_pretrain(config, root=root, force=True, verbose=0, callbacks=[Budget()],
                                   return_method=True)
    seconds = time.perf_counter() - started

    images = load_images([str(labels.parent / "images" / f"digit_{i:04d}.png") for i in range(1797)],
                         config["data"])
    targets = load_digits().target

    def features(encoder):
        return np.concatenate([encoder(images[i:i + 256], training=False).numpy()
                               for i in range(0, len(images), 256)])

    pretrained = features(method.encoder)
    shape = (*config["data"]["imshape"], config["data"]["channels"])
    simclr_acc, random_acc = [], []
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        random_encoder = build_backbone(config["backbone"], shape)
        simclr_acc.append(probe_accuracy(pretrained, targets, args.per_class, seed))
        random_acc.append(probe_accuracy(features(random_encoder), targets, args.per_class, seed))
    result = {
        "benchmark": "label_efficiency",
        "data": "demo digits (1,797 images, 32x32)",
        "backbone": f"{config['backbone']['name']}x{config['backbone']['width']:g}",
        "labels_per_class": args.per_class,
        "seeds": args.seeds,
        "pretrain_epochs": summary["epochs_completed"],
        "pretrain_seconds": round(seconds, 1),
        "budget_seconds": args.budget,
        "final_loss": round(summary["final"]["loss"], 4),
        "simclr_probe_accuracy": round(float(np.mean(simclr_acc)), 4),
        "random_init_probe_accuracy": round(float(np.mean(random_acc)), 4),
        "simclr_per_seed": [round(a, 4) for a in simclr_acc],
        "random_init_per_seed": [round(a, 4) for a in random_acc],
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
