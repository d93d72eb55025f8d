"""More like this (``m`` on the labelling page) on a large table: the latency of ``GET /api/similar``.

1. A 100,000-row label table (three classes; every 20th row labelled, every 50th excluded: they are
   not candidates) and cached features of 512 dimensions (``features.npy``, float32, as the embed
   stage writes it; random clusters, with a few near duplicates so that grouping has work to do),
   served by a real ``patchcfg label`` process (uvicorn) on 127.0.0.1.
2. Once the features are loaded (and the quick head's first fit has ended), ``--queries`` searches
   from one random row and as many from eight, over one keep-alive connection, each asking a page
   of 32 neighbours (``n=32``; the page asks ``label.grid`` squared, 16 by default) with near
   duplicates grouped at the default ``label.duplicate_threshold``. p50 and p95 of the time until
   the reply, against the goal of ``--goal-ms`` (p95), one JSON line each; the server's resident
   memory after the queries. Above 50,000 rows the search asks the features' HNSW graph
   (``patchcfg.active.index``, built in the background at start; ``index``: ``hnsw``, or
   ``exact`` while it is not ready or without FAISS).

Exit status 1 when a goal is missed. Run from the repository root::

    python benchmarks/more_like_this.py [--rows 100000 --dims 512 --queries 50 --goal-ms 200]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_app import client, start  # noqa: E402  (the same server and keep-alive client)


def write_inputs(folder: Path, rows: int, dims: int, seed: int = 0) -> Path:
    """The table, the config and the cached features; the config's path."""
    import pandas as pd

    from patchcfg.label_table import read_label_table

    rng = np.random.default_rng(seed)
    a = ["1" if i % 40 == 0 else "0" if i % 20 == 0 else "" for i in range(rows)]
    exclude = ["True" if i % 50 == 7 else "False" for i in range(rows)]
    pd.DataFrame({"filepath": [f"img/{i:06d}.png" for i in range(rows)], "exclude": exclude,
                  "validation": "False", "a": a, "b": "", "c": ""}).to_csv(folder / "labels.csv", index=False)
    config = folder / "bench.yaml"
    config.write_text(f"name: bench\ndata: {{labels: {folder / 'labels.csv'}}}\n")
    embed = folder / "experiments" / "bench" / "embed"
    embed.mkdir(parents=True)
    centres = rng.normal(size=(64, dims)).astype(np.float32)
    features = np.lib.format.open_memmap(embed / "features.npy", mode="w+", dtype=np.float32, shape=(rows, dims))
    for start_row in range(0, rows, 10_000):  # written in blocks: bounded memory here too
        end = min(rows, start_row + 10_000)
        block = centres[rng.integers(0, 64, end - start_row)] + rng.normal(size=(end - start_row, dims))
        features[start_row:end] = block.astype(np.float32)
    copies = rng.choice(rows, size=(rows // 100, 2), replace=False)  # 1% near duplicates of another row
    features[copies[:, 1]] = features[copies[:, 0]] + 0.01 * rng.normal(size=(len(copies), dims))
    features.flush()
    del features
    paths = read_label_table(folder / "labels.csv").resolved_paths()
    pd.DataFrame({"filepath": paths}).to_csv(embed / "index.csv", index=False)
    return config


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def wait_until_ready(http, timeout: float = 300.0) -> float:
    """Seconds until the features are loaded and no fit runs (the first fit starts with them)."""
    began = time.time()
    while time.time() - began < timeout:
        model = http.get("/api/state").json()["model"]
        if model["features"] == "ready" and not model["fitting"] and model["version"] >= 1:
            return time.time() - began
        time.sleep(0.5)
    raise RuntimeError(f"the features were not ready after {timeout:.0f} s: {model}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--n", type=int, default=32, help="neighbours (tiles) per search")
    parser.add_argument("--goal-ms", type=float, default=200.0, help="the p95 goal of one search")
    args = parser.parse_args()

    missed = False
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        began = time.time()
        config = write_inputs(folder, args.rows, args.dims)
        written = time.time() - began
        proc, base, token, startup = start(config, folder / "experiments")
        drain = threading.Thread(target=proc.stdout.read, daemon=True)  # its log never fills the pipe
        drain.start()
        try:
            with client(base, token) as http:
                ready = wait_until_ready(http)
                rng = np.random.default_rng(1)
                first = None
                for size in (1, 8):
                    latencies, tiles, images = [], [], []
                    for q in range(args.queries + 2):  # two to warm up, not counted
                        rows = [int(r) for r in rng.choice(args.rows, size=size, replace=False)]
                        t = time.perf_counter()
                        reply = http.get(f"/api/similar?rows={','.join(map(str, rows))}&n={args.n}")
                        elapsed = (time.perf_counter() - t) * 1000
                        reply.raise_for_status()
                        body = reply.json()
                        first = elapsed if first is None else first
                        if q >= 2:
                            latencies.append(elapsed)
                            tiles.append(len(body["rows"]))
                            images.append(body["images"])
                    p50, p95 = (float(np.percentile(latencies, p)) for p in (50, 95))
                    met = p95 <= args.goal_ms
                    missed |= not met
                    print(json.dumps({
                        "benchmark": "more_like_this", "measurement": f"similar_{size}_row{'s' * (size > 1)}",
                        "rows": args.rows, "dims": args.dims, "queries": len(latencies), "query_rows": size,
                        "n": args.n, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                        "max_ms": round(float(np.max(latencies)), 1), "first_ms": round(first, 1),
                        "goal": f"p95 <= {args.goal_ms:g} ms", "met": met,
                        "tiles_mean": round(float(np.mean(tiles)), 1),
                        "images_mean": round(float(np.mean(images)), 1),
                        "candidates": body["candidates"], "index": body.get("index"),
                        "server_rss_mb": rss_mb(proc.pid),
                        "startup_s": round(startup, 2), "ready_s": round(ready, 2),
                        "inputs_written_s": round(written, 2)}), flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except Exception:  # noqa: BLE001 - it is a benchmark's server: make sure it ends
                proc.kill()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
