"""Benchmark a wide label table: read, add a class and write back, with many class columns.

A table may hold tens of thousands of classes (one column each). The reader and the writer build
each frame in one piece, so the time grows with the cells, not with a pandas block per column,
and pandas warns of no fragmentation.

Prints one JSON line:
``{"benchmark": "label_table_width", "classes": 50000, "rows": 20, "seconds": ..., "ok": true, ...}``

    python benchmarks/label_table_width.py [--classes N] [--rows R] [--target S]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--target", type=float, default=5.0, help="Seconds the round trip must stay under.")
    args = parser.parse_args()

    import pandas as pd

    from patchcfg.label_table import read_label_table

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        header = "filepath," + ",".join(f"c{i}" for i in range(args.classes))
        rows = [f"img{r}.png," + ",".join("1" if (i + r) % 3 == 0 else "" for i in range(args.classes))
                for r in range(args.rows)]
        path.write_text("\n".join([header, *rows]) + "\n")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            table = read_label_table(path)
            table.add_class("new")
            table.write()
            seconds = time.perf_counter() - started
        fragmentation = sum(issubclass(w.category, pd.errors.PerformanceWarning) for w in caught)
    ok = seconds <= args.target and fragmentation == 0
    print(json.dumps({"benchmark": "label_table_width", "classes": args.classes, "rows": args.rows,
                      "seconds": round(seconds, 3), "performance_warnings": fragmentation,
                      "target": args.target, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
