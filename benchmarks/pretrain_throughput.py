"""SimCLR training throughput: the real input pipeline vs the model alone.

End to end: PNG files decoded, resized, shuffled, augmented into two views by ``tf.data`` and fed to
the shared training loop. Model only: the same method, backbone, batch and loop fed one batch of
in-memory tensors over and over. Both are timed on an epoch after a warm-up epoch (tracing), so the
ratio says how much the input pipeline slows training down (target: >= 0.9).

Prints one JSON line. Run from the repository root after ``patchcfg demo --out data/demo``::

    python benchmarks/pretrain_throughput.py [--backbone resnet18 --width 0.25 --batch 128 --steps 14]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default="data/demo/labels.csv")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--imshape", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=14, help="steps per epoch (14 x 128 = one pass over the demo)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after a warm-up epoch)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both measurements")
    parser.add_argument("--cache", default=None, help="data.cache (e.g. memory)")
    args = parser.parse_args(argv)

    if not Path(args.labels).is_file():
        from patchcfg.demo import write_demo

        write_demo(Path(args.labels).parent)

    import numpy as np
    import tensorflow as tf

    from patchcfg.config.schema import fill_defaults
    from patchcfg.data.images import resolve_image_paths
    from patchcfg.pretrain import get_method
    from patchcfg.train.loop import TrainLoop, environment_threads
    from patchcfg.train.precision import precision_policy

    config = fill_defaults({
        "seed": 0,
        "data": {"labels": args.labels, "imshape": [args.imshape, args.imshape], "channels": 3,
                 "cache": args.cache},
        "backbone": {"name": args.backbone, "width": args.width},
        "augmentation": {"preset": "simclr"},
        "pretrain": {"method": "simclr", "batch_size": args.batch, "epochs": 2, "temperature": 0.2,
                     "projection": {"depth": 2, "units": 128, "dim": 64}, "monitor": {"every": 0}},
    })
    paths = resolve_image_paths(config["data"])
    optimizer = {"name": "adam", "lr": 1e-3}

    def timed(method) -> list[float]:
        loop = TrainLoop(method, epochs=1 + args.epochs, steps_per_epoch=args.steps, global_batch_size=args.batch,
                         optimizer_config=optimizer, mixed_precision=config["pretrain"]["mixed_precision"], verbose=0)
        rows = loop.fit()["history"]
        return [row["images_per_second"] for row in rows[1:]]  # after the first (tracing) epoch

    simclr = get_method("simclr")

    class InMemory(simclr):
        """The same method on one batch of random tensors, repeated (no files, no augmentation)."""

        def dataset(self, epoch):
            rng = np.random.default_rng(epoch)
            shape = (self.global_batch_size, *self.input_shape)
            views = tuple(tf.constant(rng.random(shape, dtype=np.float32)) for _ in range(2))
            return tf.data.Dataset.from_tensors(views).repeat()

    # Alternate the two, several rounds, and compare medians: the machine may be shared.
    end_to_end_runs, model_only_runs = [], []
    for _ in range(args.rounds):
        end_to_end_runs += timed(simclr(config, paths))
        model_only_runs += timed(InMemory(config, paths))
    # Interference from other processes only ever slows an epoch down, so the fastest epoch of each
    # is the least disturbed estimate (as timeit takes the minimum); medians are reported too.
    end_to_end, model_only = max(end_to_end_runs), max(model_only_runs)
    median_ratio = float(np.median(end_to_end_runs)) / float(np.median(model_only_runs))
    result = {
        "benchmark": "pretrain_throughput",
        "method": "simclr",
        "backbone": f"{args.backbone}x{args.width:g}",
        "imshape": args.imshape,
        "batch_size": args.batch,
        "steps_per_epoch": args.steps,
        "timed_epochs": args.epochs * args.rounds,
        "cpu_threads": environment_threads(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "precision": precision_policy(config["pretrain"]["mixed_precision"]),
        "end_to_end_images_per_s": round(end_to_end, 1),
        "model_only_images_per_s": round(model_only, 1),
        "ratio": round(end_to_end / model_only, 3),
        "ratio_of_medians": round(median_ratio, 3),
        "end_to_end_epochs": [round(v, 1) for v in end_to_end_runs],
        "model_only_epochs": [round(v, 1) for v in model_only_runs],
        "target_ratio": 0.9,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
