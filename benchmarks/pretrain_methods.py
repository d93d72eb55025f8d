"""Every pretraining method's shipped config on the demo digits: the linear probe it reaches, and how long.

Runs ``configs/<method>.yaml`` as shipped (demo data written to a temporary folder) for each method,
plus an untrained encoder (the SimCLR config, one epoch at a learning rate of 1e-12) as the
floor. The probe is fitted on the labelled training rows and scored on the validation rows after
the last epoch. Prints one JSON line per method. Target: every method beats the untrained encoder's
probe macro AUC.

    python benchmarks/pretrain_methods.py [--methods simclr detcon ...]
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
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from patchcfg.pretrain import method_names  # every registered method (importing none of them)

    methods = method_names()
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    args = parser.parse_args(argv)

    from patchcfg.config import load_config
    from patchcfg.demo import write_demo
    from patchcfg.stages import run_pretrain

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        labels = write_demo(Path(tmp) / "demo")
        root = Path(tmp) / "experiments"

        def probe(config_name, overrides):
            config = load_config(ROOT / "configs" / f"{config_name}.yaml", [f"data.labels={labels}", *overrides])
            if config["pretrain"]["method"] == "multitask":
                config["pretrain"]["tasks"] = [{"labels": str(labels), "name": "digits", "weight": 1.0}]
            started = time.time()
            final = run_pretrain(config, root=root, verbose=0)["final"]
            return final, time.time() - started

        floor, _ = probe("simclr", ["name=untrained", "pretrain.epochs=1", "pretrain.optimizer.lr=1e-12"])
        for method in args.methods:
            final, seconds = probe(method, [])
            auc = final["probe_macro_auc"]
            ok &= auc > floor["probe_macro_auc"]
            print(json.dumps({
                "benchmark": "pretrain_methods", "method": method, "probe_accuracy": round(final["probe_accuracy"], 4),
                "probe_macro_auc": round(auc, 4), "untrained_probe_accuracy": round(floor["probe_accuracy"], 4),
                "untrained_probe_macro_auc": round(floor["probe_macro_auc"], 4),
                "beats_untrained": bool(auc > floor["probe_macro_auc"]), "seconds": round(seconds, 1)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
