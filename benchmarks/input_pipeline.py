"""Benchmark the two-view SimCLR input pipeline against what a pretraining step consumes.

Pipeline: the demo images (1,797 32x32 PNGs) decoded, shuffled, batched (256) and augmented twice
with the ``simclr`` preset, no cache, no model: source images per second. Model: a default
pretraining step on tensors already in memory (two views of a 256 batch through a ResNet-18-like
encoder at width 0.5, 2-layer projection head, NT-Xent loss, Adam, inside ``tf.function``): source
images per second. The input pipeline should feed at least ``target_ratio`` times what the model
needs, so that it never limits training.

Prints one JSON line::

    {"benchmark": "input_pipeline", "pipeline_images_per_second": ..., "model_images_per_second": ...,
     "ratio": ..., "target_ratio": 3.0, "ok": ..., ...}

    python benchmarks/input_pipeline.py [--cores 2] [--batch-size 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def limit_cores(cores: int | None) -> int:
    """Pin this process to ``cores`` CPUs (before TensorFlow starts its thread pools)."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cores and available and len(available) > cores:
        os.sched_setaffinity(0, available[:cores])
        return cores
    return len(available) or (os.cpu_count() or 1)


def demo_paths() -> tuple[list[str], str]:
    """The demo images (written with patchcfg.demo if missing), else a temporary digits set."""
    labels = ROOT / "data" / "demo" / "labels.csv"
    if not labels.is_file():
        try:
            from patchcfg.demo import write_demo

            write_demo(str(ROOT / "data" / "demo"))
        except Exception:  # noqa: BLE001 - fall back to generating the images here
            pass
    if labels.is_file():
        from patchcfg.label_table import read_label_table

        return read_label_table(labels).resolved_paths(), "data/demo"
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = Path(tempfile.mkdtemp(prefix="patchcfg-bench-"))
    paths = []
    for i, image in enumerate(load_digits().images):
        pixels = np.kron(image / 16.0 * 255, np.ones((4, 4))).astype(np.uint8)
        path = folder / f"digit_{i:04d}.png"
        Image.fromarray(np.repeat(pixels[..., None], 3, -1)).save(path)
        paths.append(str(path))
    return paths, "sklearn digits (temporary)"


def pipeline_images_per_second(paths, batch_size: int, imshape, seconds: float) -> tuple[float, float]:
    """(images per second of the two-view SimCLR pipeline, seconds of the validation pass)."""
    from patchcfg.data import readers
    from patchcfg.data.augment import build_augmenter
    from patchcfg.data.loading import check_images, make_dataset

    data_cfg = {"imshape": list(imshape[:2]), "channels": imshape[2]}
    readers.clear_cache()
    start = time.perf_counter()
    paths, _ = check_images(paths, "error", data_cfg=data_cfg)
    check_seconds = time.perf_counter() - start
    augmenter = build_augmenter({"preset": "simclr"}, imshape[:2], imshape[2], seed=0)
    ds = make_dataset(paths, data_cfg, batch_size=batch_size, shuffle=True, seed=0, repeat=True,
                      augmenter=augmenter, views=2, drop_remainder=True, cache=False)
    iterator = iter(ds)
    for _ in range(3):  # warm up: tracing, thread pools, autotuning
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        view1, _ = next(iterator)
        count += int(view1.shape[0])
    return count / (time.perf_counter() - start), check_seconds


def model_step_images_per_second(batch_size: int, imshape, seconds: float = 10.0) -> float:
    """Source images per second of the demo's SimCLR pretraining step on in-memory tensors.

    The encoder, projection head and NT-Xent temperature of ``configs/simclr.yaml``, Adam.
    """
    import keras
    import tensorflow as tf

    from patchcfg.config import load_config
    from patchcfg.models.backbones import build_backbone
    from patchcfg.pretrain.base import build_projection_head
    from patchcfg.pretrain.losses.nt_xent import nt_xent_loss

    config = load_config(ROOT / "configs" / "simclr.yaml")
    params = config["pretrain"]
    encoder = build_backbone(config["backbone"], tuple(imshape))
    projection = params["projection"]
    head = build_projection_head(int(encoder.output_shape[-1]), projection["depth"], projection["units"],
                                 projection["dim"], projection["batchnorm"],
                                 synchronized=config["backbone"]["sync_batchnorm"])
    optimizer = keras.optimizers.Adam(1e-3)
    variables = encoder.trainable_variables + head.trainable_variables

    @tf.function
    def step(view1, view2):
        with tf.GradientTape() as tape:
            z = head(encoder(tf.concat([view1, view2], 0), training=True), training=True)
            loss = nt_xent_loss(z[:batch_size], z[batch_size:], params["temperature"],
                                decoupled=params["decoupled"])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    rng = tf.random.Generator.from_seed(0)
    view1 = rng.uniform((batch_size, *imshape))
    view2 = rng.uniform((batch_size, *imshape))
    for _ in range(2):
        step(view1, view2).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 2 * batch_size:
        step(view1, view2).numpy()
        count += batch_size
    return count / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs to use (0: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--imshape", type=int, nargs=3, default=[32, 32, 3])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--target", type=float, default=3.0, help="pipeline / model ratio to reach")
    args = parser.parse_args(argv)
    cores = limit_cores(args.cores)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    paths, source = demo_paths()
    pipeline, check_seconds = pipeline_images_per_second(paths, args.batch_size, args.imshape, args.seconds)
    model = model_step_images_per_second(args.batch_size, args.imshape, args.seconds)
    ratio = pipeline / model
    gpus = tf.config.list_physical_devices("GPU")
    print(json.dumps({
        "benchmark": "input_pipeline",
        "pipeline_images_per_second": round(pipeline, 1),
        "model_images_per_second": round(model, 1),
        "ratio": round(ratio, 2),
        "target_ratio": args.target,
        "ok": bool(ratio >= args.target),
        "validation_pass_seconds": round(check_seconds, 3),
        "images": len(paths),
        "source": source,
        "batch_size": args.batch_size,
        "cores": cores,
        "device": "gpu" if gpus else "cpu",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
