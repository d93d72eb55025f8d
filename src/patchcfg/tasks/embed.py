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


_STEPS: dict = {}  # the last compiled pooled-feature step, by (encoder, strategy, normalisation)


def encoder_step(encoder, strategy, normalize, key):
    """A compiled function: one replica's batch of images in [0, 1] -> pooled float32 features
    (kept for the next call with the same ``key``)."""
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


def embed_batches(encoder, batches, data_cfg: dict, channels: int, strategy=None):
    """Pooled float32 features (numpy), batch after batch, of ``batches``: a ``tf.data`` dataset
    of global batches of images in [0, 1]. Under a ``tf.distribute`` strategy (default: the
    current one) each global batch is split across the replicas and gathered back in order."""
    import tensorflow as tf

    from patchcfg.data.loading import normalizer

    strategy = strategy or tf.distribute.get_strategy()
    key = (id(encoder), id(strategy), json.dumps(data_cfg.get("normalize"), sort_keys=True, default=str), channels)
    step = encoder_step(encoder, strategy, normalizer(data_cfg, channels), key)
    if int(strategy.num_replicas_in_sync) == 1:
        for batch in batches:
            yield step(batch).numpy()
        return
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    for batch in strategy.experimental_distribute_dataset(batches.with_options(options)):
        yield strategy.gather(strategy.run(step, args=(batch,)), axis=0).numpy()


def embed_paths(encoder, paths, data_cfg: dict, batch_size: int, strategy=None):
    """Pooled float32 features (numpy) of image files, a batch of ``batch_size`` images after
    another: decoded by one ``tf.data`` pipeline (in parallel, ahead of the encoder) and embedded
    by :func:`embed_batches`. With ``data.crops`` > 1 an image's features are its cells' mean.
    What the embed stage computes, on one machine or in each actor of ``--engine ray``."""
    import tensorflow as tf

    from patchcfg.data import crops
    from patchcfg.data.loading import image_batches

    n = crops.crops_of(data_cfg)
    batches, channels = image_batches(list(paths), crops.whole_config(data_cfg), batch_size)
    if n > 1:
        batches = batches.map(lambda images: crops.cut(images, n))
    for features in embed_batches(encoder, batches.prefetch(tf.data.AUTOTUNE), data_cfg, channels, strategy):
        yield features.reshape(-1, n * n, features.shape[-1]).mean(axis=1) if n > 1 else features


class Embedder:
    """An actor of ``embed --engine ray`` (:func:`patchcfg.tasks.ray_engine.map_in_order`): the
    encoder the embed stage finds (:func:`find_encoder`, loaded once), and a batch of rows
    ``{position, path}`` -> ``{position, features}`` (:func:`embed_paths`)."""

    def __init__(self, config: dict, experiment_dir: str, which: str, batch_size: int, threads: int | None = None):
        import keras

        from patchcfg.tasks.ray_engine import set_threads

        set_threads(threads)
        keras.utils.set_random_seed(int(config["seed"]))  # a backbone as is: the weights the stage has
        self.encoder, _ = find_encoder(config, Path(experiment_dir), which)
        self.data_cfg, self.batch_size = config["data"], int(batch_size)

    def __call__(self, batch: dict) -> dict:
        features = list(embed_paths(self.encoder, batch["path"].tolist(), self.data_cfg, self.batch_size))
        return {"position": np.asarray(batch["position"]), "features": np.concatenate(features, 0)}


def features_of(encoder, images: np.ndarray, data_cfg: dict, batch_size: int = 256, strategy=None) -> np.ndarray:
    """Pooled features (N, D) float32 of images in [0, 1]; a feature map is averaged over space.
    ``batch_size`` images per replica (see :func:`embed_batches`)."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size * int(strategy.num_replicas_in_sync))
    out = list(embed_batches(encoder, batches, data_cfg, images.shape[-1], strategy))
    return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


def _copy_runs(source: np.memmap, target: np.memmap, runs, block: int = 64 << 20) -> None:
    """Copy runs ``(source row, target row, rows)`` between two ``.npy`` files with pread/pwrite,
    a block at a time: three times faster than through both memory maps (no page faults)."""
    width = int(np.prod(source.shape[1:], dtype=np.int64)) * source.dtype.itemsize
    with open(source.filename, "rb") as reader, open(target.filename, "r+b") as writer:
        for row, to, count in runs:
            done = 0
            while done < count * width:
                data = os.pread(reader.fileno(), min(block, count * width - done), source.offset + row * width + done)
                if not data:
                    raise OSError(f"{source.filename}: ends before row {row + count}")
                view = memoryview(data)
                while view:
                    wrote = os.pwrite(writer.fileno(), view, target.offset + to * width + done)
                    view, done = view[wrote:], done + wrote


class FeatureWriter:
    """Features of ``rows`` images streamed into ``folder/features.npy``, resumably (``name``:
    another file name than ``features``; rows of any shape, e.g. DetCon's segment maps). With
    ``positions``, the rows written go to those rows in order and the others come from an earlier
    file through :meth:`reuse` (an embed after images were added: only the new ones are computed).

    Rows go into a memory-mapped ``features.npy.partial`` (created when the first rows give the
    row shape); at each :meth:`checkpoint` (after each chunk) the file is flushed and
    ``features.progress.json`` records the rows done, with ``key`` (what the features depend on: the image files, encoder, dtype). A writer
    whose key matches the record continues from there (:attr:`done`); any other starts afresh.
    :meth:`publish` renames the finished file to ``features.npy`` (atomic), so a reader sees the
    old file or the whole new one, never a part.
    """

    def __init__(self, folder: Path, rows: int, dtype: str, key: dict, name: str = "features",
                 positions: np.ndarray | None = None):
        self.folder, self.rows, self.dtype = Path(folder), int(rows), np.dtype(dtype)
        self.positions = np.arange(self.rows) if positions is None else np.asarray(positions, np.int64)
        self.key = {**key, "rows": self.rows, "dtype": self.dtype.name}
        self.path = self.folder / f"{name}.npy"
        self.partial = self.folder / f"{name}.npy.partial"
        self.progress = self.folder / f"{name}.progress.json"
        self.array = None
        #: feature dimensions of the published file (set by :meth:`publish`)
        self.dimensions = 0
        #: rows on disk for good (recorded) / rows written so far
        self.done = self._resumable()
        self.written = self.done

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
                    and 0 < int(record["done"]) <= len(self.positions)):
                return int(record["done"])
            self.array = None
        self.discard()
        return 0

    def discard(self) -> None:
        """Forget a partial file (and its record)."""
        for path in (self.progress, self.partial):
            path.unlink(missing_ok=True)

    def _open(self, row_shape: tuple) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=self.dtype,
                                                   shape=(self.rows, *row_shape))

    def reuse(self, source: np.ndarray, into: np.ndarray, rows: np.ndarray, chunk: int = 65536) -> None:
        """Copy ``source[rows]`` into rows ``into`` (before the first :meth:`write`; on disk for good
        with the first :meth:`checkpoint`)."""
        self._open(source.shape[1:])
        order = np.argsort(rows, kind="stable")  # read the source in order: a memory-mapped file pages in once
        into, rows = into[order], rows[order]
        breaks = np.flatnonzero((np.diff(into) != 1) | (np.diff(rows) != 1)) + 1
        if len(breaks) < max(1, len(rows) // chunk):  # mostly runs of rows in the same order: copy runs
            starts, stops = np.r_[0, breaks], np.r_[breaks, len(rows)]
            runs = [(int(rows[a]), int(into[a]), int(b - a)) for a, b in zip(starts, stops, strict=True)]
            if isinstance(source, np.memmap) and source.flags.c_contiguous and source.dtype == self.dtype:
                _copy_runs(source, self.array, runs)
            else:
                for row, to, count in runs:
                    self.array[to:to + count] = source[row:row + count]
            return
        for start in range(0, len(rows), chunk):
            self.array[into[start:start + chunk]] = source[rows[start:start + chunk]]

    def write(self, features: np.ndarray) -> None:
        """The next rows (after :attr:`written`); on disk for good at the next :meth:`checkpoint`."""
        self._open(features.shape[1:])
        if self.written + len(features) > len(self.positions):
            raise ValueError(f"{self.written + len(features)} rows written, {len(self.positions)} expected")
        rows = self.positions[self.written:self.written + len(features)]
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1:  # consecutive: a slice, no fancy indexing
            self.array[rows[0]:rows[-1] + 1] = features
        else:
            self.array[rows] = features
        self.written += len(features)

    def checkpoint(self) -> int:
        """Flush the rows written and record them as done (a rerun continues after them)."""
        from patchcfg.atomic import atomic_write_text

        if self.array is not None:
            self.array.flush()
        self.done = self.written
        atomic_write_text(self.progress, json.dumps({"key": self.key, "done": self.done}))
        return self.done

    def publish(self) -> Path:
        """The finished file becomes ``features.npy`` (atomically); the record goes."""
        from patchcfg.atomic import atomic_write_bytes

        if self.written != len(self.positions):
            raise ValueError(f"{self.written} of {len(self.positions)} rows written")
        if self.array is None:  # no rows: an empty (0, 0) file, as np.save writes it
            import io

            buffer = io.BytesIO()
            np.save(buffer, np.zeros((0, 0), self.dtype))
            atomic_write_bytes(self.path, buffer.getvalue())
        else:
            self.dimensions = int(self.array.shape[1])
            self.array.flush()
            del self.array
            self.array = None
            with open(self.partial, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.partial, self.path)
        self.progress.unlink(missing_ok=True)
        return self.path


def positions_in(known, paths) -> np.ndarray:
    """Where each of ``paths`` is among ``known`` (the rows of ``features.npy``, of a job's scores):
    int64 positions, -1 where it is not there."""
    where = {p: i for i, p in enumerate(known)}
    return np.fromiter((where.get(p, -1) for p in paths), dtype=np.int64, count=len(paths))


def unreadable_paths(experiment_dir: Path) -> set[str]:
    """The images the last embed skipped as unreadable (listed in its ``summary.json``): rows that
    have no features by design, not for want of an embed."""
    try:
        summary = json.loads((Path(experiment_dir) / "embed" / "summary.json").read_text(encoding="utf-8"))
        return {entry["path"] for entry in summary.get("skipped", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def load_features(experiment_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Cached features (memory-mapped, read-only: pages are read when used, so a million rows cost
    no memory until read) and their file paths, as written by the embed stage."""
    import pandas as pd

    folder = Path(experiment_dir) / "embed"
    if not (folder / "features.npy").is_file():
        raise UserError(f"{folder}/features.npy does not exist; run `patchcfg embed` first")
    features = np.load(folder / "features.npy", mmap_mode="r")
    paths = pd.read_csv(folder / "index.csv")["filepath"].tolist()
    if len(paths) != len(features):
        raise UserError(f"{folder}: features.npy has {len(features)} rows and index.csv {len(paths)}: an embed is "
                        "replacing them; wait for it to finish (or run `patchcfg embed` again)")
    return features, paths
