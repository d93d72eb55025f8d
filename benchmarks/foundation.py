"""Foundation encoders (``backbone.name: keras_hub``): the embed stage's rate, and what a linear
probe on their frozen features is worth at a few labels per class.

(a) Embed rate. For two random DINOv2 presets written here (no download): ``tiny`` (28 px, patch
4, 2 layers of width 32) and ``vit-s`` (ViT-S/14: 224 px, patch 14, 12 layers, width 384, 6
heads), the same encoder is timed two ways, on the demo digits (32-px PNGs, resized to the
preset's size inside the model by its image converter):

- ``model_only_images_per_second``: the embed stage's compiled encoder step on a batch already in
  memory (after one call has traced it), over as many images as the stage's steady rate counts;
- ``images_per_second``: the embed stage itself (``patchcfg embed``'s code, in process) on the
  image files: decoded, batched, the encoder, the features written to ``features.npy``; its steady
  rate, after the first batch has compiled the step.

The two alternate (``--rounds`` stage runs, a model-only run before and after each) and the best
of each is compared, as ``scale.py`` does: this machine's speed changes from minute to minute.
Goal: ``ratio`` >= 0.9, one line per size. ``median_pair_ratio`` (each stage run against the
mean of the model-only runs either side) shows the spread; ``cpu_bound_ratio``, model / (model +
decode) by CPU time, is the most the ratio can reach when decoding and the encoder share the cores.

(b) Linear probe, only with ``--preset DIR`` (a real KerasHub preset folder, e.g. made with
``patchcfg weights fetch kaggle://keras/dinov2/keras/dinov2_small --out DIR``): frozen features of
every image of a label table (default: the 1,797 demo digits, all labelled) from that preset,
from our SimCLR encoder (a short pretraining with ``configs/demo.yaml``'s recipe, which is
``configs/simclr.yaml``'s, on the probe's images, or ``--simclr encoder.keras``) and raw pixels;
the labelling app's quick head (one-vs-rest logistic regression on standardised features) fitted
on 1, 5 and 10 labelled images per class, accuracy on all the other images, the mean over
``--draws`` random draws. One line per (labels_per_class, encoder).
Without ``--preset`` the same code runs as a smoke check on the tiny random preset, 30 images per
digit and one SimCLR epoch, its lines marked ``"preset": "random (no --preset given)"``: their
accuracies say nothing about foundation models.

The default run takes 2–3 minutes on 2 shared cores and needs no network. Exit status 1 when a
goal is missed.

    python benchmarks/foundation.py [--rounds 2] [--vit-images 128]
    python benchmarks/foundation.py --preset /models/dinov2_small [--simclr encoder.keras] [--labels CSV]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATIO_GOAL = 0.9
BATCH = 32
#: the random presets of (a): save_random_preset's keyword arguments
SIZES = {
    "tiny": {"image_size": 28, "patch_size": 4, "layers": 2, "hidden": 32, "heads": 2},
    "vit-s": {"image_size": 224, "patch_size": 14, "layers": 12, "hidden": 384, "heads": 6},
}
SMOKE = "random (no --preset given)"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from input_pipeline import limit_cores  # noqa: E402  (pin the cores before TensorFlow starts)


def device() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def write_table(path: Path, paths: list[str], digits) -> Path:
    """A label table of ``paths``, every demo class known from the digit of each."""
    import pandas as pd

    from patchcfg.demo import CLASSES, digit_labels

    rows = [{"filepath": p, **digit_labels(int(d))} for p, d in zip(paths, digits, strict=True)]
    pd.DataFrame(rows, columns=["filepath", *CLASSES]).to_csv(path, index=False)
    return path


def keras_hub_config(name: str, labels: Path, preset: str, *, image_size=None, imshape=(32, 32),
                     channels: int = 3, pooling: str = "cls") -> dict:
    backbone = {"name": "keras_hub", "preset": str(preset), "pooling": pooling}
    if image_size:
        backbone["image_size"] = int(image_size)
    return {"name": name, "seed": 0,
            "data": {"labels": str(labels), "imshape": list(imshape), "channels": channels},
            "backbone": backbone, "embed": {"batch_size": BATCH}, "distribute": {"strategy": "default"}}


# --------------------------------------------------------------------------- (a) the embed rate


def model_only(config: dict):
    """A function ``count -> (images/s, CPU microseconds per image, all threads)`` of the embed
    stage's compiled encoder step on a batch already in memory: at least ``count`` images, the
    encoder built and the step traced once, before the first call."""
    import tensorflow as tf

    from patchcfg.config import resolve_config
    from patchcfg.data.loading import normalizer
    from patchcfg.tasks.embed import encoder_step, find_encoder

    resolved = resolve_config(config)
    data = resolved["data"]
    encoder, _ = find_encoder(resolved, Path(tempfile.gettempdir()), "backbone")
    step = encoder_step(encoder, tf.distribute.get_strategy(), normalizer(data, data["channels"]), ("model-only",))
    shape = (BATCH, *data["imshape"], data["channels"])
    images = tf.constant(np.random.default_rng(1).uniform(size=shape).astype(np.float32))
    step(images).numpy()  # trace

    def rate(count: int) -> tuple[float, float]:
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while done < count:
            step(images).numpy()
            done += BATCH
        return done / (time.perf_counter() - started), (time.process_time() - cpu) / done * 1e6

    return rate


def decode_cpu_per_image(paths: list[str], config: dict) -> float:
    """CPU microseconds (all threads) per image of the embed stage's decoding pipeline alone."""
    import tensorflow as tf

    from patchcfg.config import resolve_config
    from patchcfg.data.loading import image_batches

    batches, _ = image_batches(paths, resolve_config(config)["data"], BATCH)
    cpu = time.process_time()
    count = sum(int(b.shape[0]) for b in batches.prefetch(tf.data.AUTOTUNE))
    return (time.process_time() - cpu) / count * 1e6


def embed_rate(size: str, folder: Path, paths: list[str], digits, rounds: int) -> dict:
    from patchcfg.models.foundation import save_random_preset
    from patchcfg.stages import run_embed

    spec = SIZES[size]
    started = time.perf_counter()
    preset = save_random_preset(str(folder / f"preset-{size}"), "dinov2", **spec)
    preset_seconds = time.perf_counter() - started
    labels = write_table(folder / f"embed-{size}.csv", paths, digits)
    config = keras_hub_config(f"embed-{size}", labels, preset, image_size=spec["image_size"])
    steady = max(BATCH, len(paths) - BATCH)  # the images the stage's steady rate counts
    model_rate = model_only(config)
    stage_rates, stage_seconds, model_runs = [], [], [model_rate(steady)]

    # alternating (model, stage, model, stage, model) and the best of each
    for round_ in range(rounds):
        started = time.perf_counter()  # a new experiment each time: a finished stage would be skipped
        summary = run_embed({**config, "name": f"{config['name']}-{round_}"}, root=folder / "experiments",
                            encoder="backbone", verbose=0)
        stage_seconds.append(round(time.perf_counter() - started, 2))
        stage_rates.append(summary["steady_images_per_second"])
        model_runs.append(model_rate(steady))
    model, stage = max(rate for rate, _ in model_runs), max(stage_rates)
    model_cpu = min(cpu for _, cpu in model_runs)
    decode_cpu = decode_cpu_per_image(paths, config)
    ratio = stage / model
    # each stage run against the mean of the model-only runs either side of it
    pairs = [rate / ((before + after) / 2) for rate, (before, _), (after, _)
             in zip(stage_rates, model_runs, model_runs[1:], strict=False)]
    return {
        "benchmark": "foundation", "what": "embed_rate", "size": size,
        "preset": f"random DINOv2, {spec['image_size']} px, patch {spec['patch_size']}, {spec['layers']} layers, "
                  f"width {spec['hidden']}, {spec['heads']} heads",
        "images": len(paths), "image_files": "demo digits, 32-px PNG", "batch_size": BATCH,
        "images_per_second": round(stage, 2), "model_only_images_per_second": round(model, 2),
        "ratio": round(ratio, 3), "goal_ratio": RATIO_GOAL, "ok": bool(ratio >= RATIO_GOAL),
        "median_pair_ratio": round(float(np.median(pairs)), 3),
        "stage_runs": stage_rates, "model_only_runs": [round(rate, 2) for rate, _ in model_runs],
        "stage_wall_seconds": stage_seconds,
        "model_cpu_us_per_image": round(model_cpu, 1), "decode_cpu_us_per_image": round(decode_cpu, 1),
        "cpu_bound_ratio": round(model_cpu / (model_cpu + decode_cpu), 3),
        "preset_write_seconds": round(preset_seconds, 2),
    }


# --------------------------------------------------------------------------- (b) the linear probe


def probe_table(args, folder: Path, demo: Path, digits) -> tuple[Path, list[str], np.ndarray, list[str]]:
    """(the label table, its image paths, each row's class index, the class names) of the probe:
    ``--labels`` (rows with exactly one of ``--classes`` present), else the demo digits."""
    from patchcfg.demo import DIGIT_CLASSES
    from patchcfg.label_table import read_label_table

    if args.labels:
        table = read_label_table(args.labels)
        classes = args.classes.split(",") if args.classes else table.classes
        missing = [c for c in classes if c not in table.classes]
        if missing:
            raise SystemExit(f"--classes: {', '.join(missing)} not in {args.labels}")
        matrix = table.label_matrix(classes)
        keep = (matrix == 1).sum(axis=1) == 1
        paths = [p for p, k in zip(table.resolved_paths(), keep, strict=True) if k]
        targets = matrix[keep].argmax(axis=1)
        path = folder / "probe.csv"
        import pandas as pd

        frame = pd.DataFrame({"filepath": paths})
        for i, name in enumerate(classes):
            frame[name] = (targets == i).astype(float)
        frame.to_csv(path, index=False)
        return path, paths, targets, classes
    rows = np.arange(len(digits))
    if args.preset is None:  # the smoke check: a few images per digit
        rng = np.random.default_rng(0)
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(digits == d), args.smoke_per_class, replace=False)
                                       for d in range(10)]))
    paths = [str(demo / "images" / f"digit_{i:04d}.png") for i in rows]
    return write_table(folder / "probe.csv", paths, digits[rows]), paths, digits[rows], list(DIGIT_CLASSES)


def embedded(config: dict, root: Path, encoder: str, paths: list[str]) -> np.ndarray:
    """The embed stage's features of ``paths`` (in that order)."""
    from patchcfg.stages import run_embed
    from patchcfg.tasks.embed import load_features, positions_in

    run_embed(config, root=root, encoder=encoder, verbose=0)
    features, index = load_features(root / config["name"])
    where = positions_in([os.path.abspath(p) for p in index], [os.path.abspath(p) for p in paths])
    if (where < 0).any():
        raise SystemExit(f"embed left out {int((where < 0).sum())} of the probe's images")
    return np.asarray(features[where], np.float32)


def simclr_features(args, folder: Path, labels: Path, paths: list[str]) -> tuple[np.ndarray, str]:
    """Our SimCLR encoder's features: ``--simclr`` as given, else a short pretraining with the demo
    config's recipe on the probe's images. Returns (features, what the encoder is)."""
    from patchcfg.config import load_config
    from patchcfg.stages import run_pretrain

    epochs = args.simclr_epochs if args.simclr_epochs is not None else (8 if args.preset else 1)
    overrides = [f"data.labels={labels}", "name=probe-simclr", f"pretrain.epochs={epochs}",
                 "pretrain.monitor.every=0", "distribute.strategy=default", f"embed.batch_size={BATCH * 8}"]
    if args.imshape:
        overrides.append(f"data.imshape=[{args.imshape},{args.imshape}]")
    if len(paths) < 128:  # simclr.yaml's batch, which a small table cannot fill
        overrides.append(f"pretrain.batch_size={len(paths)}")
    # the demo's pretraining: configs/demo.yaml extends simclr.yaml's pretrain and backbone sections
    # unchanged (its finetune section would want the demo's classes in the table)
    config = load_config(ROOT / "configs" / "simclr.yaml", overrides, sections=("embed",))
    root = folder / "experiments"
    if args.simclr:
        return embedded(config, root, str(Path(args.simclr).resolve()), paths), f"simclr ({args.simclr})"
    run_pretrain(config, root=root, force=True, verbose=0)
    backbone = config["backbone"]
    epochs_text = f"{epochs} epoch{'s' * (epochs != 1)}"
    what = f"simclr ({backbone['name']} x{backbone['width']:g}, {epochs_text} on the probe's images)"
    return embedded(config, root, "pretrain", paths), what


def probe_accuracy(features: np.ndarray, targets: np.ndarray, classes: int, per_class: int, seed: int) -> float:
    """The labelling app's quick head fitted on ``per_class`` random images of each class;
    accuracy (argmax) on every other image."""
    from patchcfg.active.quick_head import QuickHead

    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(targets == c), per_class, replace=False)
                            for c in range(classes)])
    mask = np.zeros(len(targets), bool)
    mask[train] = True
    onehot = (targets[:, None] == np.arange(classes)[None, :]).astype(np.float32)
    probabilities = QuickHead.fit(features, onehot, mask, exclusive=True, seed=seed).probabilities()
    return float(np.mean(probabilities[~mask].argmax(axis=1) == targets[~mask]))


def linear_probe(args, folder: Path, demo: Path, digits) -> list[dict]:
    from patchcfg.config import resolve_config
    from patchcfg.data.loading import load_images
    from patchcfg.models.foundation import save_random_preset

    labels, paths, targets, classes = probe_table(args, folder, demo, digits)
    side = args.imshape or 32
    if args.preset:
        preset, preset_name = args.preset, str(args.preset)
    else:
        preset, preset_name = save_random_preset(str(folder / "preset-probe"), "dinov2", **SIZES["tiny"]), SMOKE
    config = keras_hub_config("probe-foundation", labels, preset, image_size=args.image_size,
                              imshape=(side, side), pooling=args.pooling)
    encoders = {}
    started = time.perf_counter()
    features = embedded(config, folder / "experiments", "backbone", paths)
    encoders[f"foundation ({args.pooling} pooling)"] = (features, time.perf_counter() - started)
    started = time.perf_counter()
    features, what = simclr_features(args, folder, labels, paths)
    encoders[what] = (features, time.perf_counter() - started)
    started = time.perf_counter()
    features = load_images(paths, resolve_config(config)["data"]).reshape(len(paths), -1)
    encoders["raw pixels"] = (features, time.perf_counter() - started)

    lines = []
    for per_class in args.per_class:
        smallest = int(np.bincount(targets, minlength=len(classes)).min())
        if per_class >= smallest:
            print(json.dumps({"benchmark": "foundation", "what": "linear_probe", "labels_per_class": per_class,
                              "skipped": f"a class has only {smallest} images"}), flush=True)
            continue
        for encoder, (features, seconds) in encoders.items():
            scores = [probe_accuracy(features, targets, len(classes), per_class, seed) for seed in range(args.draws)]
            line = {"benchmark": "foundation", "what": "linear_probe", "labels_per_class": per_class,
                    "encoder": encoder, "accuracy": round(float(np.mean(scores)), 4),
                    "accuracy_per_draw": [round(s, 4) for s in scores], "draws": args.draws,
                    "preset": preset_name, "images": len(paths), "classes": len(classes),
                    "features": int(features.shape[1]), "feature_seconds": round(seconds, 1),
                    "probe": "quick head (one-vs-rest logistic regression, standardised features, C=1)"}
            print(json.dumps(line), flush=True)
            lines.append(line)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs to use (0: all)")
    parser.add_argument("--rounds", type=int, default=2, help="embed stage runs per size (a)")
    parser.add_argument("--tiny-images", type=int, default=1797, help="images embedded with the tiny preset (a)")
    parser.add_argument("--vit-images", type=int, default=128, help="images embedded with the ViT-S preset (a)")
    parser.add_argument("--sizes", default="tiny,vit-s", help="which of (a)'s presets to time (none: skip (a))")
    parser.add_argument("--preset", default=None, help="a KerasHub preset folder for the linear probe (b)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="backbone.image_size for --preset (default: the preset's own)")
    parser.add_argument("--pooling", default="cls", help="backbone.pooling for --preset: cls, mean, cls+mean, avg")
    parser.add_argument("--simclr", default=None, help="an encoder.keras to probe instead of pretraining one")
    parser.add_argument("--simclr-epochs", type=int, default=None,
                        help="SimCLR epochs when no --simclr is given (default 8; 1 without --preset)")
    parser.add_argument("--labels", default=None, help="the probe's label table (default: the demo digits)")
    parser.add_argument("--classes", default=None, help="--labels' mutually exclusive classes (default: all)")
    parser.add_argument("--imshape", type=int, default=None, help="data.imshape side of the probe (default 32)")
    parser.add_argument("--per-class", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--draws", type=int, default=None,
                        help="random draws per labels-per-class (default 5; 2 without --preset)")
    parser.add_argument("--smoke-per-class", type=int, default=30, help="demo images per digit without --preset")
    parser.add_argument("--keep", default=None, help="keep the presets, images and experiments here")
    args = parser.parse_args(argv)
    args.draws = args.draws or (5 if args.preset else 2)
    cores = limit_cores(args.cores)
    if args.preset:
        from patchcfg.models.presets import read_preset

        read_preset(args.preset, "--preset")  # a folder that is no preset fails here, before any work

    from sklearn.datasets import load_digits

    from patchcfg.demo import write_demo

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="patchcfg-foundation-"))
    folder.mkdir(parents=True, exist_ok=True)
    missed = []
    try:
        demo = folder / "demo"
        write_demo(demo)
        digits = load_digits().target
        on = device()
        counts = {"tiny": args.tiny_images, "vit-s": args.vit_images}
        for size in [s for s in args.sizes.split(",") if s and s != "none"]:
            rows = np.arange(min(counts[size], len(digits)))
            paths = [str(demo / "images" / f"digit_{i:04d}.png") for i in rows]
            line = embed_rate(size, folder, paths, digits[rows], args.rounds)
            line.update(device=on, cores=cores)
            print(json.dumps(line), flush=True)
            if not line["ok"]:
                missed.append(f"embed_rate {size}: ratio {line['ratio']} < {RATIO_GOAL}")
        linear_probe(args, folder, demo, digits)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if missed:
        print("goals missed: " + "; ".join(missed), file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
