"""Pre-extracted features: the pooled encoder output of every image, cached in the experiment.

``experiments/<name>/embed/features.npy`` (``embed.dtype``: float32 or float16, one row per
image) and ``index.csv`` (``filepath`` per row, as resolved paths) let queries and quick heads run
on a laptop without a GPU (patchwork's pre-extracted-features mode). The encoder is, by default,
this experiment's pretrained encoder, else its fine-tuned fold 0 model's encoder, else the
``backbone`` as is.

At a million images the features do not fit comfortably in memory: :class:`FeatureWriter` streams
them chunk by chunk into a memory-mapped ``.npy`` (``numpy.lib.format.open_memmap``), records the
chunks done, continues after an interruption, and publishes the finished file atomically;
:func:`load_features` memory-maps it.
"""

from __future__ import annotations

import json
import os
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


_STEPS: dict = {}  # (encoder, strategy, normalisation) -> its compiled pooled-feature step


def _step(encoder, strategy, normalize, key):
    import tensorflow as tf

    cached = _STEPS.get(key)
    if cached is not None and cached[0] is encoder and cached[1] is strategy:
        return cached[2]

    @tf.function
    def replica_step(images):
        features = encoder(normalize(images), training=False)
        if len(features.shape) == 4:
            features = tf.reduce_mean(features, axis=[1, 2])
        return tf.cast(features, tf.float32)

    _STEPS.clear()
    _STEPS[key] = (encoder, strategy, replica_step)
    return replica_step


def features_of(encoder, images: np.ndarray, data_cfg: dict, batch_size: int = 256, strategy=None) -> np.ndarray:
    """Pooled features (N, D) float32 of images in [0, 1]; a feature map is averaged over space.

    Under a ``tf.distribute`` strategy (default: the current one) each global batch of
    ``batch_size`` x replicas images is split across the replicas and gathered back in order."""
    import tensorflow as tf

    from patchcfg.data.loading import normalizer

    strategy = strategy or tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    normalize = normalizer(data_cfg, images.shape[-1])
    key = (id(encoder), id(strategy), json.dumps(data_cfg.get("normalize"), sort_keys=True, default=str),
           images.shape[-1])
    step = _step(encoder, strategy, normalize, key)
    out = []
    if replicas == 1:
        for start in range(0, len(images), batch_size):
            out.append(step(tf.constant(images[start:start + batch_size])).numpy())
    else:
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size * replicas)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        for batch in strategy.experimental_distribute_dataset(dataset.with_options(options)):
            out.append(strategy.gather(strategy.run(step, args=(batch,)), axis=0).numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


class FeatureWriter:
    """Features of ``rows`` images streamed into ``folder/features.npy``, resumably.

    Chunks go into a memory-mapped ``features.npy.partial`` (created when the first chunk gives
    the dimension); after each chunk the file is flushed and ``features.progress.json`` records
    the rows done, with ``key`` (what the features depend on: paths, encoder, dtype). A writer
    whose key matches the record continues from there (:attr:`done`); any other starts afresh.
    :meth:`publish` renames the finished file to ``features.npy`` (atomic), so a reader sees the
    old file or the whole new one, never a part.
    """

    def __init__(self, folder: Path, rows: int, dtype: str, key: dict):
        self.folder, self.rows, self.dtype = Path(folder), int(rows), np.dtype(dtype)
        self.key = {**key, "rows": self.rows, "dtype": self.dtype.name}
        self.path = self.folder / "features.npy"
        self.partial = self.folder / "features.npy.partial"
        self.progress = self.folder / "features.progress.json"
        self.array = None
        self.done = self._resumable()

    def _resumable(self) -> int:
        try:
            record = json.loads(self.progress.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if record and record.get("key") == self.key and self.partial.is_file():
            try:
                self.array = np.lib.format.open_memmap(self.partial, mode="r+")
            except (OSError, ValueError):
                self.array = None
            if (self.array is not None and self.array.shape[0] == self.rows and self.array.dtype == self.dtype
                    and 0 < int(record["done"]) <= self.rows):
                return int(record["done"])
            self.array = None
        self.discard()
        return 0

    def discard(self) -> None:
        """Forget a partial file (and its record)."""
        for path in (self.progress, self.partial):
            path.unlink(missing_ok=True)

    def write(self, start: int, features: np.ndarray) -> None:
        """Rows ``start:start + len(features)``; chunks come in order, each after the last."""
        from patchcfg.atomic import atomic_write_text

        if start != self.done:
            raise ValueError(f"chunk at row {start}, but {self.done} rows are done")
        if self.array is None:
            self.array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=self.dtype,
                                                   shape=(self.rows, features.shape[1]))
        self.array[start:start + len(features)] = features
        self.array.flush()
        self.done = start + len(features)
        atomic_write_text(self.progress, json.dumps({"key": self.key, "done": self.done}))

    def publish(self) -> Path:
        """The finished file becomes ``features.npy`` (atomically); the record goes."""
        from patchcfg.atomic import atomic_write_bytes

        if self.done != self.rows:
            raise ValueError(f"{self.done} of {self.rows} rows written")
        if self.array is None:  # no rows: an empty (0, 0) file, as np.save writes it
            import io

            buffer = io.BytesIO()
            np.save(buffer, np.zeros((0, 0), self.dtype))
            atomic_write_bytes(self.path, buffer.getvalue())
        else:
            self.array.flush()
            del self.array
            self.array = None
            with open(self.partial, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.partial, self.path)
        self.progress.unlink(missing_ok=True)
        return self.path


def load_features(experiment_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Cached features (memory-mapped, read-only: pages are read when used, so a million rows cost
    no memory until read) and their file paths, as written by the embed stage."""
    import pandas as pd

    folder = Path(experiment_dir) / "embed"
    if not (folder / "features.npy").is_file():
        raise UserError(f"{folder}/features.npy does not exist; run `patchcfg embed` first")
    return np.load(folder / "features.npy", mmap_mode="r"), pd.read_csv(folder / "index.csv")["filepath"].tolist()
