"""The embed stage: the pooled encoder output of every image, cached in the experiment
(``embed/features.npy`` and ``embed/index.csv``; see :mod:`patchcfg.tasks.embed`).

Images are decoded by one ``tf.data`` pipeline, in parallel and ahead of the encoder, embedded
under the configured ``tf.distribute`` strategy (each global batch split across the replicas) and
streamed into a memory-mapped file, checkpointed every ``CHUNK`` images: an interrupted embed
continues from its last checkpoint, and ``features.npy`` appears only when complete.

``index.csv`` records each image's path, modification time and size. When images are added,
removed or replaced after a complete embed, the stage runs again (:meth:`EmbedStage.outdated`) and
computes only the new and changed images; the others' features are copied from the last file,
which stays readable until the new one replaces it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from patchcfg.stages import register
from patchcfg.stages.runner import Stage

#: images between checkpoints (flush + record): the unit of resumption
CHUNK = 8192


@register
class EmbedStage(Stage):
    """Options besides the runner's: ``encoder`` (auto | pretrain | finetune | backbone | a path);
    ``on_chunk`` (called with the rows done after each chunk is on disk)."""

    name = "embed"
    depends_on = ("pretrain", "finetune")
    schema = "embed.schema.json"
    section_help = "Cached features of every image (`patchcfg embed`)."
    command_help = "Cache encoder features of every image."
    command = "patchcfg.commands.pipeline:embed"

    def __init__(self, config: dict, root=None, force: bool = False, *, encoder: str = "auto", on_chunk=None,
                 **options):
        from patchcfg.config import with_defaults

        super().__init__(config, root, force, **options)
        self.which = encoder
        self.on_chunk = on_chunk
        self.params = with_defaults("embed", self.config.get("embed") or {})
        self._image_keys = None

    def inputs(self) -> dict:
        import keras

        from patchcfg.tasks.embed import find_encoder

        keras.utils.set_random_seed(int(self.config["seed"]))  # a backbone as is: the same weights on a rerun
        self.encoder, self.source = find_encoder(self.config, self.experiment.dir, self.which)
        path = Path(self.source)
        return {"encoder": self.source, "encoder_mtime": path.stat().st_mtime if path.is_file() else None}

    def image_keys(self) -> tuple[list[str], list[tuple]]:
        """(the image paths, their :func:`~patchcfg.data.readers.file_keys`), taken once per run:
        the skip check and the run share them (a million files' sizes and times take seconds)."""
        from patchcfg.data.images import resolve_image_paths
        from patchcfg.data.readers import file_keys

        if self._image_keys is None:
            resolved = resolve_image_paths(self.data_cfg)
            self._image_keys = (resolved, file_keys(resolved))
        return self._image_keys

    def outdated(self) -> str | None:
        from patchcfg.data.readers import files_digest

        recorded = self.stage_run.read_summary().get("files")
        if recorded is None or files_digest(self.image_keys()[1]) == recorded:
            return None
        return (f"embed of '{self.config['name']}': images were added, removed or replaced since the last embed; "
                "embedding the new and changed ones")

    def reusable(self, keys: list[tuple]):
        """(features, into, rows): the last complete embed's ``rows`` whose image is unchanged (same
        path, modification time and size), for rows ``into`` of this one; None when there are none."""
        import pandas as pd

        run = self.stage_run
        try:
            index = pd.read_csv(run.path("index.csv"))
            features = np.load(run.path("features.npy"), mmap_mode="r")
        except (OSError, ValueError):
            return None
        if not {"mtime_ns", "size"} <= set(index.columns) or len(index) != len(features) \
                or features.dtype != np.dtype(self.params["dtype"]) or features.ndim != 2:
            return None
        index = pd.DataFrame({"filepath": index["filepath"].map(os.path.abspath),
                              "mtime_ns": index["mtime_ns"], "size": index["size"], "row": np.arange(len(index))})
        now = pd.DataFrame(keys, columns=["filepath", "mtime_ns", "size"]).assign(into=np.arange(len(keys)))
        both = now.merge(index.dropna().astype({"mtime_ns": "int64", "size": "int64"}),
                         on=["filepath", "mtime_ns", "size"])
        if both.empty:
            return None
        return features, both["into"].to_numpy(np.int64), both["row"].to_numpy(np.int64)

    def prepare(self) -> None:
        import tensorflow as tf

        from patchcfg.train import distribute

        # several machines: each embeds with its own devices (the chief writes); nothing to all-gather
        if self.strategy is None and distribute.resolve_name(self.config["distribute"]["strategy"]) == "multi_worker":
            several = len(tf.config.list_physical_devices("GPU")) > 1
            self.strategy = distribute.make_strategy("mirrored" if several else "default")

    def execute(self) -> dict:
        import pandas as pd
        import tensorflow as tf

        from patchcfg.atomic import atomic_write_text
        from patchcfg.data import crops
        from patchcfg.data.loading import image_batches
        from patchcfg.data.readers import files_digest
        from patchcfg.tasks.embed import FeatureWriter, embed_batches

        run, params = self.stage_run, self.params
        resolved, all_keys = self.image_keys()
        paths = self.readable(resolved)
        replicas = int(self.strategy.num_replicas_in_sync)
        summary = {"images": len(paths), "dimensions": 0, "encoder": self.source, "dtype": params["dtype"],
                   "replicas": replicas, "files": files_digest(all_keys)}
        if not self.chief:
            return summary
        readable = set(paths) if len(paths) < len(resolved) else None
        keys = [k for p, k in zip(resolved, all_keys, strict=True) if readable is None or p in readable]
        reused = self.reusable(keys)
        todo = np.arange(len(paths))
        if reused is not None:
            todo = np.setdiff1d(todo, reused[1])
            self.say(f"embed: {len(todo)} of {len(paths)} images new or changed; the features of the other "
                     f"{len(reused[1])} are kept")
        key = {"files": files_digest(keys), "encoder": self.source,
               "data": {k: self.data_cfg[k] for k in ("imshape", "channels", "normalize", "resize", "crops")}}
        if reused is not None:
            key["kept"] = len(reused[1])
        writer = FeatureWriter(run.dir, len(paths), params["dtype"], key, positions=todo)
        if writer.done:
            self.say(f"embed: resuming after {writer.done} of {len(todo)} images")
        elif reused is not None:
            writer.reuse(*reused)
        summary["resumed_at"] = writer.done
        summary["kept"] = 0 if reused is None else len(reused[1])
        started, first_batch = time.perf_counter(), None
        if writer.done < len(todo):
            # one pipeline: images are decoded (in parallel, ahead) while the encoder runs
            n = crops.crops_of(self.data_cfg)  # with crops: an image's features are its cells' mean
            per_batch = max(1, int(params["batch_size"]) * replicas // (n * n))
            batches, channels = image_batches([paths[i] for i in todo[writer.done:]],
                                              crops.whole_config(self.data_cfg), per_batch)
            if n > 1:
                batches = batches.map(lambda images: crops.cut(images, n))
            batches = batches.prefetch(tf.data.AUTOTUNE)
            for features in embed_batches(self.encoder, batches, self.data_cfg, channels, self.strategy):
                writer.write(features.reshape(-1, n * n, features.shape[-1]).mean(axis=1) if n > 1 else features)
                if first_batch is None:  # compiled and the pipeline started: the steady rate counts after it
                    first_batch = (time.perf_counter(), writer.written)
                if writer.written - writer.done >= CHUNK or writer.written == len(todo):
                    writer.checkpoint()
                    if self.on_chunk is not None:
                        self.on_chunk(writer.done)
        seconds = time.perf_counter() - started
        embedded = writer.written - summary["resumed_at"]
        index = pd.DataFrame({"filepath": paths, "mtime_ns": [key[1] for key in keys], "size": [key[2] for key in keys]})
        atomic_write_text(run.path("index.csv"), index.to_csv(index=False))
        writer.publish()
        summary["dimensions"] = writer.dimensions
        summary["images_per_second"] = round(embedded / seconds, 2) if embedded and seconds > 0 else None
        steady = (writer.written - first_batch[1], started + seconds - first_batch[0]) if first_batch else (0, 0)
        summary["steady_images_per_second"] = round(steady[0] / steady[1], 2) if steady[0] and steady[1] > 0 else None
        return summary

    def done_message(self, summary: dict) -> str:
        return (f"embed: {summary['images']} images -> {summary['dimensions']}-d {summary['dtype']} features from "
                f"{summary['encoder']} ({self.stage_run.path('features.npy')})")
