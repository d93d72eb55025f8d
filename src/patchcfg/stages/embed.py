"""The embed stage: the pooled encoder output of every image, cached in the experiment
(``embed/features.npy`` and ``embed/index.csv``; see :mod:`patchcfg.embed`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from patchcfg.stages.runner import Stage

#: images per encoder pass: bounded memory for large image sets
CHUNK = 2048


class EmbedStage(Stage):
    """Option besides the runner's: ``encoder`` (auto | pretrain | finetune | backbone | a path)."""

    name = "embed"
    distributed = False

    def __init__(self, config: dict, root=None, force: bool = False, *, encoder: str = "auto", **options):
        super().__init__(config, root, force, **options)
        self.which = encoder

    def inputs(self) -> dict:
        from patchcfg.embed import find_encoder

        self.encoder, self.source = find_encoder(self.config, self.experiment.dir, self.which)
        path = Path(self.source)
        return {"encoder": self.source, "encoder_mtime": path.stat().st_mtime if path.is_file() else None}

    def execute(self) -> dict:
        import pandas as pd

        from patchcfg.atomic import atomic_write_bytes, atomic_write_text
        from patchcfg.data.images import resolve_image_paths
        from patchcfg.data.loading import load_images
        from patchcfg.embed import features_of

        run = self.stage_run
        paths = self.readable(resolve_image_paths(self.data_cfg))
        chunks = [features_of(self.encoder, load_images(paths[start:start + CHUNK], self.data_cfg), self.data_cfg)
                  for start in range(0, len(paths), CHUNK)]
        features = np.concatenate(chunks, 0) if chunks else np.zeros((0, 0), np.float32)
        buffer = io.BytesIO()
        np.save(buffer, features.astype(np.float32))
        atomic_write_bytes(run.path("features.npy"), buffer.getvalue())
        atomic_write_text(run.path("index.csv"), pd.DataFrame({"filepath": paths}).to_csv(index=False))
        return {"images": len(paths), "dimensions": int(features.shape[1]) if features.size else 0,
                "encoder": self.source}

    def done_message(self, summary: dict) -> str:
        return (f"embed: {summary['images']} images -> {summary['dimensions']}-d features from {summary['encoder']} "
                f"({self.stage_run.path('features.npy')})")
