"""The embed stage: the pooled encoder output of every image, cached in the experiment
(``embed/features.npy`` and ``embed/index.csv``; see :mod:`patchcfg.embed`).

Images are read chunk by chunk (the next chunk is decoded while the encoder runs on this one),
embedded under the configured ``tf.distribute`` strategy (each batch split across the replicas)
and streamed into a memory-mapped file: an interrupted embed continues from its last chunk, and
``features.npy`` appears only when complete.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from patchcfg.stages.runner import Stage

#: images per chunk: bounded memory for large image sets, and the unit of resumption
CHUNK = 2048


class EmbedStage(Stage):
    """Options besides the runner's: ``encoder`` (auto | pretrain | finetune | backbone | a path);
    ``on_chunk`` (called with the rows done after each chunk is on disk)."""

    name = "embed"

    def __init__(self, config: dict, root=None, force: bool = False, *, encoder: str = "auto", on_chunk=None,
                 **options):
        from patchcfg.config import with_defaults

        super().__init__(config, root, force, **options)
        self.which = encoder
        self.on_chunk = on_chunk
        self.params = with_defaults("embed", self.config.get("embed") or {})

    def inputs(self) -> dict:
        import keras

        from patchcfg.embed import find_encoder

        keras.utils.set_random_seed(int(self.config["seed"]))  # a backbone as is: the same weights on a rerun
        self.encoder, self.source = find_encoder(self.config, self.experiment.dir, self.which)
        path = Path(self.source)
        return {"encoder": self.source, "encoder_mtime": path.stat().st_mtime if path.is_file() else None}

    def prepare(self) -> None:
        import tensorflow as tf

        from patchcfg.train import distribute

        # several machines: each embeds with its own devices (the chief writes); nothing to all-gather
        if self.strategy is None and distribute.resolve_name(self.config["distribute"]["strategy"]) == "multi_worker":
            several = len(tf.config.list_physical_devices("GPU")) > 1
            self.strategy = distribute.make_strategy("mirrored" if several else "default")

    def execute(self) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        import pandas as pd

        from patchcfg.atomic import atomic_write_text
        from patchcfg.data.images import resolve_image_paths
        from patchcfg.data.loading import load_images
        from patchcfg.embed import FeatureWriter, features_of

        run, params = self.stage_run, self.params
        paths = self.readable(resolve_image_paths(self.data_cfg))
        summary = {"images": len(paths), "dimensions": 0, "encoder": self.source, "dtype": params["dtype"],
                   "replicas": int(self.strategy.num_replicas_in_sync)}
        if not self.chief:
            return summary
        key = {"paths_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(), "encoder": self.source,
               "chunk": CHUNK, "data": {k: self.data_cfg[k] for k in ("imshape", "channels")}}
        writer = FeatureWriter(run.dir, len(paths), params["dtype"], key)
        if writer.done:
            self.say(f"embed: resuming after {writer.done} of {len(paths)} images")
        summary["resumed_at"] = writer.done
        starts = list(range(writer.done, len(paths), CHUNK))
        started, embedded = time.perf_counter(), 0

        def read(start):
            return load_images(paths[start:start + CHUNK], self.data_cfg)

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(read, starts[0]) if starts else None
            for i, start in enumerate(starts):
                images = pending.result()
                pending = pool.submit(read, starts[i + 1]) if i + 1 < len(starts) else None
                features = features_of(self.encoder, images, self.data_cfg, int(params["batch_size"]),
                                       strategy=self.strategy)
                writer.write(start, features)
                embedded += len(features)
                if self.on_chunk is not None:
                    self.on_chunk(writer.done)
        seconds = time.perf_counter() - started
        atomic_write_text(run.path("index.csv"), pd.DataFrame({"filepath": paths}).to_csv(index=False))
        writer.publish()
        if writer.rows:
            import numpy as np

            summary["dimensions"] = int(np.load(run.path("features.npy"), mmap_mode="r").shape[1])
        summary["images_per_second"] = round(embedded / seconds, 2) if embedded and seconds > 0 else None
        return summary

    def done_message(self, summary: dict) -> str:
        return (f"embed: {summary['images']} images -> {summary['dimensions']}-d {summary['dtype']} features from "
                f"{summary['encoder']} ({self.stage_run.path('features.npy')})")
