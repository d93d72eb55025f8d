"""The labelling app under load: label latency on a large table, and labels lost to a SIGKILL.

1. A 100,000-row label table (three classes, all unknown; the images need not exist: labelling
   never reads them) served by a real ``patchcfg label`` process (uvicorn) on 127.0.0.1.
2. 2,000 ``POST /api/label`` one after another over one keep-alive connection, each a single
   row with two classes set: p50 and p95 of the time until the reply (each reply means the
   change is fsync'd to the journal). Also the p50 of ``GET /api/queue`` (random, 16 rows).
3. ``--kill-after`` more POSTs, then SIGKILL the moment the last one is acknowledged; start the
   app again (it replays the journal into the CSV) and count the acknowledged labels missing
   from the CSV: ``labels_lost`` must be 0.

Prints one JSON line. Run from the repository root::

    python benchmarks/label_app.py [--rows 100000 --posts 2000 --kill-after 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def start(config: Path, root: Path):
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "patchcfg.cli", "label", str(config), "--port", "0",
                             "--no-browser", "--no-embed", "--experiments", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    started, seen = time.time(), []
    for line in proc.stdout:
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        if found:
            return proc, found.group(1), found.group(2), time.time() - started
    raise RuntimeError(f"the app did not start (exit {proc.wait()}):\n{''.join(seen)}")


def client(base: str, token: str):
    """A keep-alive client that, like a browser, sends without waiting (TCP_NODELAY): otherwise a
    request's headers and body in two packets meet the server's delayed ACK and every POST waits
    about 40 ms in the network stack."""
    import socket

    import httpx

    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=base, transport=transport, timeout=60,
                        headers={"X-Patchcfg-Token": token, "X-Patchcfg-Client": "bench"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--kill-after", type=int, default=300)
    args = parser.parse_args()

    from patchcfg.label_table import read_label_table

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rows = [f"img/{i:06d}.png,False,False,,," for i in range(args.rows)]
        lines = ["filepath,exclude,validation,a,b,c", *rows]
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
        config = folder / "bench.yaml"
        config.write_text(f"name: bench\ndata: {{labels: {folder / 'labels.csv'}}}\n")
        proc, base, token, startup = start(config, folder / "experiments")
        rng = np.random.default_rng(0)
        acknowledged = {}
        latencies, queue_latencies = [], []
        with client(base, token) as http:
            for i in range(args.posts):
                row = int(i * (args.rows // args.posts))
                values = rng.integers(0, 2, 2).tolist()
                began = time.perf_counter()
                changes = {"a": values[0], "b": values[1]}
                reply = http.post("/api/label", json={"row": row, "changes": changes})
                latencies.append((time.perf_counter() - began) * 1000)
                reply.raise_for_status()
                acknowledged[row] = values
                if i % 100 == 0:
                    began = time.perf_counter()
                    http.get("/api/queue?strategy=random&n=16").raise_for_status()
                    queue_latencies.append((time.perf_counter() - began) * 1000)
            for i in range(args.kill_after):
                row = int(i * (args.rows // args.posts)) + 1
                values = rng.integers(0, 2, 2).tolist()
                changes = {"a": values[0], "b": values[1]}
                http.post("/api/label", json={"row": row, "changes": changes}).raise_for_status()
                acknowledged[row] = values
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, base, token, restart = start(config, folder / "experiments")
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        df = read_label_table(folder / "labels.csv").df
        a, b = df["a"].to_numpy(), df["b"].to_numpy()
        lost = sum(1 for row, (va, vb) in acknowledged.items() if a[row] != va or b[row] != vb)
        extra = int((~np.isnan(a)).sum()) - len(acknowledged)
    print(json.dumps({"benchmark": "label_app", "rows": args.rows, "posts": args.posts,
                      "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                      "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                      "max_ms": round(float(np.max(latencies)), 2),
                      "queue_p50_ms": round(float(np.percentile(queue_latencies, 50)), 2),
                      "killed_after_acknowledged": args.kill_after, "labels_lost": lost,
                      "labels_extra": extra,
                      "startup_s": round(startup, 2), "restart_with_replay_s": round(restart, 2)}))


if __name__ == "__main__":
    main()
