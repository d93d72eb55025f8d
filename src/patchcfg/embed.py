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
        return build_backbone(config["backbone"], (*data["imshape"], data["channels"])), "backbone"
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


def load_features(experiment_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Cached features (memory-mapped, read-only: pages are read when used, so a million rows cost
    no memory until read) and their file paths, as written by the embed stage."""
    import pandas as pd

    folder = Path(experiment_dir) / "embed"
    if not (folder / "features.npy").is_file():
        raise UserError(f"{folder}/features.npy does not exist; run `patchcfg embed` first")
    return np.load(folder / "features.npy", mmap_mode="r"), pd.read_csv(folder / "index.csv")["filepath"].tolist()
