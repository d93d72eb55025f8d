"""DeepCluster's per-epoch clustering at a million images, and DetCon's segments in memory or streamed.

DeepCluster (Caron et al., ECCV 2018) clusters every image's features at the start of every epoch.
Setup (not timed): ``--rows`` x 256 float32 features from a gaussian mixture (500 components of
unequal weight), written once to a ``.npy``. Each measurement runs in a child process of its own,
which reads the features into memory (as the epoch's features are), then times the whole
clustering: the block-wise PCA to ``pca_dim`` (whitened, L2-normalised) and one way of k-means:

- ``sampled``: the project's way (:func:`patchcfg.pretrain.deepcluster.cluster_features`):
  k-means++ and Lloyd on ``kmeans_sample_per_cluster`` images per cluster, then every image
  assigned to its nearest centroid; measured at several sample sizes (``--per-cluster``);
- ``all``: scikit-learn's ``KMeans`` on every row (k-means++ on every row too);
- ``minibatch``: scikit-learn's ``MiniBatchKMeans`` (Sculley 2010; batches of 4096, at most
  ``kmeans_iterations`` passes, its own early stop);
- ``faiss``: ``faiss.Kmeans`` with its defaults (256 points per centroid), only where faiss is
  importable (it is no dependency of the project).

The ways run one after another for each k (the schema's default ``clusters``, then ``--big-k``),
so they share the machine's load. Each line::

    {"benchmark": "deepcluster_kmeans", "what": "sampled", "per_cluster": 128, "clusters": 100,
     "rows": 1000000, "seconds": ..., "peak_memory_gb": ..., "step_anon_gb": ..., "inertia": ...,
     "inertia_vs_best": 1.002, ...}

Memory is measured as in ``benchmarks/scale.py`` (its helpers): ``peak_memory_gb`` the child's
``VmHWM``, ``step_anon_gb`` its peak anonymous memory above what it held before (the features read
in, the interpreter): what the clustering itself needs. ``inertia`` is the sum of squared distances of
the clustered (PCA-whitened, normalised) rows to their cluster's mean; ``inertia_vs_best`` divides it
by the lowest of the k. A child that runs past ``--timeout`` seconds is stopped and its line says so.

Goal (the project's way, the schema's defaults, at 1,000,000 x 256 on 2 cores): one epoch's
clustering within 60 s and 2 GB above the features, inertia within 2% of the best way's.

DetCon (Hénaff et al., ICCV 2021) lines (``--detcon-images``, 0 to skip): the Felzenszwalb segments
of that many 64 x 64 PNGs computed as before (every image decoded into one array, the segments into
another, both held) against the method's file (:meth:`patchcfg.pretrain.detcon.DetCon.segments`:
computed 256 images at a time into a memory-mapped file), then 20 batches of 256 images' segments
read from each; ``step_anon_gb`` is what each way holds. Exit status 1 when a goal is missed.

    python benchmarks/deepcluster_kmeans.py [--rows N] [--big-k K] [--per-cluster 64,128,256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale import GB, Memory  # noqa: E402

DIMS = 256
GOAL_SECONDS, GOAL_ANON_GB, GOAL_INERTIA = 60.0, 2.0, 1.02


def defaults() -> dict:
    from patchcfg.config import with_defaults

    return with_defaults("pretrain", {"method": "deepcluster"})


def make_features(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` x 256 float32 features of a gaussian mixture, written block by block."""
    rng = np.random.default_rng(seed)
    components = 500
    centres = rng.normal(size=(components, DIMS)).astype(np.float32) * 1.5
    weights = rng.uniform(0.2, 1.0, components)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, DIMS))
    for start in range(0, rows, 65536):
        count = min(65536, rows - start)
        which = rng.choice(components, size=count, p=weights / weights.sum())
        out[start:start + count] = centres[which] + rng.standard_normal((count, DIMS), dtype=np.float32)
    out.flush()
    del out


def inertia(x: np.ndarray, labels: np.ndarray, clusters: int) -> float:
    """Sum of squared distances of the rows of ``x`` to their cluster's mean."""
    sums = np.zeros((clusters, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=clusters)
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    total = 0.0
    for start in range(0, len(x), 65536):
        total += float(((x[start:start + 65536] - means[labels[start:start + 65536]]) ** 2).sum(dtype=np.float64))
    return total


def cluster(way: str, features: np.ndarray, clusters: int, per_cluster: int, params: dict) -> np.ndarray:
    from patchcfg.pretrain.deepcluster import cluster_features, pca_normalised

    seed, iterations = 1, params["kmeans_iterations"]
    if way in ("sampled", "all", "minibatch"):
        per_cluster = per_cluster if way == "sampled" else len(features) // clusters + 1
        return cluster_features(features, clusters, pca_dim=params["pca_dim"], whiten=params["whiten"],
                                iterations=iterations, sample_per_cluster=per_cluster, seed=seed,
                                way="minibatch" if way == "minibatch" else "sampled")
    x = pca_normalised(features, params["pca_dim"], params["whiten"])
    if way == "faiss":
        import faiss

        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=seed)
        kmeans.train(x)
        return kmeans.index.search(x, 1)[1][:, 0].astype(np.int32)
    raise SystemExit(f"unknown way {way}")


def kmeans_child(args) -> dict:
    from patchcfg.pretrain.deepcluster import pca_normalised

    way, clusters, per_cluster = args.child.split(":")
    clusters, per_cluster = int(clusters), int(per_cluster)
    params = defaults()
    features = np.load(Path(args.dir) / "features.npy")  # in memory, as an epoch's features are
    with Memory() as memory:
        started = time.perf_counter()
        labels = cluster(way, features, clusters, per_cluster, params)
        seconds = time.perf_counter() - started
    line = {"benchmark": "deepcluster_kmeans", "what": way, "clusters": clusters, "rows": len(features),
            "seconds": round(seconds, 2), "peak_memory_gb": round(Memory.status("VmHWM") / GB, 3),
            "step_anon_gb": round((memory.peak - memory.start) / GB, 3),
            "clusters_used": int(len(np.unique(labels)))}
    if way == "sampled":
        line["per_cluster"] = per_cluster
    line["inertia"] = round(inertia(pca_normalised(features, params["pca_dim"], params["whiten"]), labels,
                                    clusters), 2)
    return line


def write_images(folder: Path, count: int, side: int) -> list[str]:
    """``count`` PNGs of ``side`` x ``side`` pixels: a few flat rectangles each (segments to find)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.full((side, side, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(6):
            top, left = rng.integers(0, side - 8, 2)
            height, width = rng.integers(8, side // 2, 2)
            pixels[top:top + height, left:left + width] = rng.integers(0, 256, 3)
        path = folder / f"{i:06d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def detcon_child(args) -> dict:
    """Memory held by DetCon's Felzenszwalb segments: computed in memory from every image at once
    (as before), or computed block by block into the memory-mapped file and read per batch."""
    from patchcfg.config.schema import fill_defaults
    from patchcfg.data.loading import load_images
    from patchcfg.pretrain.detcon import DetCon, felzenszwalb_segments

    side, batch = 64, 256
    way = args.child.split(":")[1]
    folder = Path(args.dir)
    paths = sorted(str(p) for p in (folder / "images").glob("*.png"))
    config = fill_defaults({"seed": 0, "data": {"imshape": [side, side]},
                            "pretrain": {"method": "detcon", "batch_size": batch}})
    method = DetCon(config, paths, workdir=folder / f"work_{way}")
    fh = method.params.felzenszwalb
    rng = np.random.default_rng(0)
    with Memory() as memory:
        started = time.perf_counter()
        if way == "in_memory":
            segments = felzenszwalb_segments(load_images(paths, method.data_cfg), method.num_masks,
                                             fh.scale, fh.sigma, fh.min_size)
        else:
            segments = method.segments()
        read = [segments[np.sort(rng.choice(len(paths), batch, replace=False))] for _ in range(20)]
        seconds = time.perf_counter() - started
    return {"benchmark": "deepcluster_kmeans", "what": f"detcon_segments_{way}", "rows": len(paths),
            "imshape": [side, side], "seconds": round(seconds, 2),
            "segments_gb": round(len(paths) * side * side / GB, 4),
            "step_anon_gb": round((memory.peak - memory.start) / GB, 3), "batches_read": len(read)}


def run_child(step: str, folder: str, args, timeout: float) -> dict | None:
    command = [sys.executable, __file__, "--rows", str(args.rows), "--detcon-images", str(args.detcon_images),
               "--child", step, "--dir", folder]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-k", type=int, default=1000, help="the second number of clusters (0: skip)")
    parser.add_argument("--per-cluster", default="64,128,256", help="sample sizes of the sampled way")
    parser.add_argument("--ways", default="sampled,minibatch,all,faiss")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a child is stopped")
    parser.add_argument("--detcon-images", type=int, default=4096)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        line = detcon_child(args) if args.child.startswith("detcon:") else kmeans_child(args)
        print(json.dumps(line), flush=True)
        return 0

    params = defaults()
    ways = args.ways.split(",")
    if "faiss" in ways:
        try:
            import faiss  # noqa: F401
        except ImportError:
            ways.remove("faiss")
    ok = True
    with tempfile.TemporaryDirectory(prefix="patchcfg_kmeans_") as tmp:
        started = time.perf_counter()
        make_features(Path(tmp) / "features.npy", args.rows)
        print(json.dumps({"benchmark": "deepcluster_kmeans", "what": "setup", "rows": args.rows, "dims": DIMS,
                          "seconds": round(time.perf_counter() - started, 2),
                          "features_gb": round(args.rows * DIMS * 4 / GB, 3)}), flush=True)
        for clusters in [params["clusters"], *([args.big_k] if args.big_k else [])]:
            steps = [f"sampled:{clusters}:{n}" for n in args.per_cluster.split(",") if "sampled" in ways]
            steps += [f"{way}:{clusters}:0" for way in ways if way != "sampled"]
            lines = []
            for step in steps:
                line = run_child(step, tmp, args, args.timeout)
                if "error" in line:
                    way, _, per = step.split(":")
                    line = {"benchmark": "deepcluster_kmeans", "what": way, "clusters": clusters, "rows": args.rows,
                            **({"per_cluster": int(per)} if way == "sampled" else {}), **line}
                lines.append(line)
            best = min((line["inertia"] for line in lines if "inertia" in line), default=None)
            for line in lines:
                if "inertia" in line:
                    line["inertia_vs_best"] = round(line["inertia"] / best, 4)
                ours = (line["what"] == "sampled" and line.get("per_cluster") == params["kmeans_sample_per_cluster"]
                        and clusters == params["clusters"])
                if ours:
                    line.update(goal_seconds=GOAL_SECONDS, goal_step_anon_gb=GOAL_ANON_GB,
                                goal_inertia_vs_best=GOAL_INERTIA)
                    line["ok"] = ("error" not in line and line["seconds"] <= GOAL_SECONDS
                                  and line["step_anon_gb"] <= GOAL_ANON_GB
                                  and line["inertia_vs_best"] <= GOAL_INERTIA)
                    ok = ok and line["ok"]
                print(json.dumps(line), flush=True)
        if args.detcon_images:
            write_images(Path(tmp) / "images", args.detcon_images, 64)
            for way in ("in_memory", "file"):
                line = run_child(f"detcon:{way}", tmp, args, args.timeout)
                print(json.dumps({"benchmark": "deepcluster_kmeans", "what": f"detcon_segments_{way}", **line}),
                      flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
