"""Pre-extracted features: the pooled encoder output of every image, cached in the experiment.

``experiments/<name>/embed/features.npy`` (float32, one row per image) and ``index.csv``
(``filepath`` per row, as resolved paths) let queries and quick heads run on a laptop without a
GPU (patchwork's pre-extracted-features mode). The encoder is, by default, this experiment's
pretrained encoder, else its fine-tuned fold 0 model's encoder, else the ``backbone`` as is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchcfg.errors import UserError

ENCODERS = ("auto", "pretrain", "finetune", "backbone")


def find_encoder(config: dict, experiment_dir: Path, which: str = "auto"):
    """(keras encoder, description) for ``which``: auto | pretrain | finetune | backbone | a path."""
    import keras

    from patchcfg.models.backbones import build_backbone, load_encoder

    pretrained = experiment_dir / "pretrain" / "encoder.keras"
    finetuned = experiment_dir / "finetune" / "fold_0" / "model.keras"
    if which == "auto":
        which = "pretrain" if pretrained.is_file() else "finetune" if finetuned.is_file() else "backbone"
    if which == "pretrain":
        if not pretrained.is_file():
            raise UserError(f"{pretrained} does not exist; run `patchcfg pretrain` first")
        return load_encoder(pretrained), str(pretrained)
    if which == "finetune":
        if not finetuned.is_file():
            raise UserError(f"{finetuned} does not exist; run `patchcfg finetune` first")
        return keras.saving.load_model(finetuned, compile=False).get_layer("encoder"), f"{finetuned} (encoder)"
    if which == "backbone":
        data = config["data"]
        return build_backbone(config.get("backbone") or {}, (*data["imshape"], data["channels"])), "backbone"
    if not Path(which).is_file():
        raise UserError(f"--encoder: {which} is not {', '.join(ENCODERS)} nor an existing file")
    return load_encoder(which), which


def features_of(encoder, images: np.ndarray, data_cfg: dict, batch_size: int = 256) -> np.ndarray:
    """Pooled features (N, D) of images in [0, 1]; a feature map is averaged over space."""
    import tensorflow as tf

    from patchcfg.data.loading import normalizer

    normalize = normalizer(data_cfg, images.shape[-1])
    out = []
    for start in range(0, len(images), batch_size):
        features = encoder(normalize(tf.constant(images[start:start + batch_size])), training=False)
        if len(features.shape) == 4:
            features = tf.reduce_mean(features, axis=[1, 2])
        out.append(tf.cast(features, tf.float32).numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


def run_embed(config: dict, root=None, force: bool = False, *, strategy=None, encoder: str = "auto",
              verbose="auto", log=None) -> dict:
    """Compute and cache the features of every image (the ``embed`` stage)."""
    import pandas as pd

    from patchcfg.atomic import atomic_write_bytes, atomic_write_text
    from patchcfg.data.images import resolve_image_paths
    from patchcfg.data.loading import check_images, load_images
    from patchcfg.experiment import Experiment, stage_logs

    log, say = stage_logs(log, verbose)
    experiment = Experiment(config, root=root, force=force)
    source_model, source = find_encoder(config, experiment.dir, encoder)
    inputs = {"encoder": source, "encoder_mtime": Path(source).stat().st_mtime if Path(source).is_file() else None}
    run = experiment.stage("embed", inputs=inputs)
    if run.is_complete():
        say(run.skip_message())
        return run.read_summary()
    data_cfg = config["data"]
    with run:
        paths, skipped = check_images(resolve_image_paths(data_cfg), data_cfg.get("on_bad_image", "error"),
                                      data_cfg=data_cfg)
        features = np.zeros((0, 0), np.float32)
        for start in range(0, len(paths), 2048):  # bounded memory for large image sets
            chunk = features_of(source_model, load_images(paths[start:start + 2048], data_cfg), data_cfg)
            features = chunk if start == 0 else np.concatenate([features, chunk], 0)
        import io

        buffer = io.BytesIO()
        np.save(buffer, features.astype(np.float32))
        atomic_write_bytes(run.path("features.npy"), buffer.getvalue())
        atomic_write_text(run.path("index.csv"), pd.DataFrame({"filepath": paths}).to_csv(index=False))
        summary = {"images": len(paths), "dimensions": int(features.shape[1]) if features.size else 0,
                   "encoder": source, "skipped_images": len(skipped), "skipped": skipped}
        run.write_summary(summary)
        say(f"embed: {len(paths)} images -> {features.shape[1] if features.size else 0}-d features from {source} "
            f"({run.path('features.npy')})")
    return summary


def load_features(experiment_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Cached features and their file paths, as written by :func:`run_embed`."""
    import pandas as pd

    folder = Path(experiment_dir) / "embed"
    if not (folder / "features.npy").is_file():
        raise UserError(f"{folder}/features.npy does not exist; run `patchcfg embed` first")
    return np.load(folder / "features.npy"), pd.read_csv(folder / "index.csv")["filepath"].tolist()
