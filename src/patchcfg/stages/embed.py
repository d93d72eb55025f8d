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

Shards, for a scheduler without a cluster engine (a SLURM array): ``--shard i/N`` embeds the
i-th of N contiguous slices of the image list (contiguous: the merge is a concatenation, and each
task reads neighbouring files) into ``embed_shards/i-of-N/``, a folder of its own beside
``embed/`` (a new encoder or ``--force`` for ``embed/`` does not wipe the shards) with its own
lock, status and resumable writer: the N tasks run at once and an interrupted one resumes.
``--merge`` checks that all N shards are complete, with this config (its fingerprint), this
encoder and the images as they are now, names every shard that is not in one message, then
joins them into the ``embed/features.npy`` and ``index.csv`` an unsharded embed writes (same
rows, same order) and removes ``embed_shards/``. Shards of two different N, a shard of another
N than those there, and a plain embed while unmerged shards are there, are refused.

``--engine ray`` (:mod:`patchcfg.tasks.ray_engine`) has the actors of a Ray cluster compute the
features of the rows still to do, in place of this machine's pipeline; everything else (the lock,
the skip and reuse rules, the writer and its checkpoints, the files written) stays as it is, so
a ray embed and a local one write the same files and resume each other.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from patchcfg.errors import UserError
from patchcfg.stages import register
from patchcfg.stages.runner import Stage

#: images between checkpoints (flush + record): the unit of resumption
CHUNK = 8192
#: the experiment's folder of ``--shard`` runs, one ``i-of-N`` folder each
SHARDS = "embed_shards"


def parse_shard(value) -> tuple[int, int]:
    """(i, N) of ``--shard i/N`` (a string or a pair): the i-th of N slices, 0 <= i < N."""
    parts = value.split("/") if isinstance(value, str) else list(value)
    try:
        i, n = (int(part) for part in parts)
    except (TypeError, ValueError):
        i = n = -1
    if not 0 <= i < n:
        raise UserError(f"--shard: {value!r} is not i/N, shard i of N with 0 <= i < N (0/4, 1/4, 2/4, 3/4; "
                        "in a SLURM array: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return i, n


def shard_rows(total: int, i: int, n: int) -> slice:
    """The rows of shard ``i`` of ``n`` among ``total``: the i-th of n contiguous, near-equal slices."""
    return slice(i * total // n, (i + 1) * total // n)


@register
class EmbedStage(Stage):
    """Options besides the runner's: ``encoder`` (auto | pretrain | finetune | backbone | a path);
    ``on_chunk`` (called with the rows done after each chunk is on disk); ``shard`` (``"i/N"``:
    embed only that slice, into its own folder) or ``merge`` (join the N complete shards);
    ``engine``: ``local`` (this machine) or ``ray`` (the actors of a Ray cluster at ``address``,
    ``actors`` of them, each a ``ray_actor``, by default :class:`~patchcfg.tasks.embed.Embedder`)
    computes the features."""

    name = "embed"
    depends_on = ("pretrain", "finetune")
    schema = "embed.schema.json"
    section_help = "Cached features of every image (`patchcfg embed`)."
    command_help = "Cache encoder features of every image."
    command = "patchcfg.commands.pipeline:embed"

    def __init__(self, config: dict, root=None, force: bool = False, *, encoder: str = "auto", on_chunk=None,
                 shard=None, merge: bool = False, engine: str = "local", address: str | None = None,
                 actors: int | None = None, ray_actor: type | None = None, **options):
        from patchcfg.config import with_defaults
        from patchcfg.tasks.ray_engine import check_engine

        if shard is not None and merge:
            raise UserError("--shard and --merge: one or the other (embed the shards, then merge them)")
        check_engine(engine, shard=shard, merge=merge, address=address, actors=actors)
        super().__init__(config, root, force, **options)
        self.engine, self.address, self.actors, self.ray_actor = engine, address, actors, ray_actor
        self.which = encoder
        self.on_chunk = on_chunk
        self.shard = None if shard is None else parse_shard(shard)
        self.merge = merge
        self.params = with_defaults("embed", self.config.get("embed") or {})
        self._image_keys = None
        self.shards: list[Path] = []

    def open_run(self):
        if self.shard is None:
            return super().open_run()
        i, n = self.shard
        return self.experiment.stage(f"{SHARDS}/{i}-of-{n}", inputs=self.inputs(), own_lock=True)

    def fingerprint(self) -> str:
        """A SHA-256 of the resolved config: shards merge only when they ran with the same one."""
        return hashlib.sha256(self.experiment.config_text.encode()).hexdigest()

    def shard_folders(self) -> dict[int, list[Path]]:
        """The ``embed_shards/i-of-N`` folders there, by N."""
        found: dict[int, list[Path]] = {}
        folder = self.experiment.dir / SHARDS
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            match = re.fullmatch(r"(\d+)-of-(\d+)", path.name)
            if match and path.is_dir():
                found.setdefault(int(match[2]), []).append(path)
        return found

    def inputs(self) -> dict:
        import keras

        from patchcfg.tasks.embed import find_encoder

        keras.utils.set_random_seed(int(self.config["seed"]))  # a backbone as is: the same weights on a rerun
        self.encoder, self.source = find_encoder(self.config, self.experiment.dir, self.which)
        path = Path(self.source)
        return {"encoder": self.source, "encoder_mtime": path.stat().st_mtime if path.is_file() else None}

    def image_keys(self) -> tuple[list[str], list[tuple]]:
        """(the image paths, their :func:`~patchcfg.data.readers.file_keys`), taken once per run:
        the skip check and the run share them (a million files' sizes and times take seconds).
        A shard's are its slice."""
        from patchcfg.data.images import resolve_image_paths
        from patchcfg.data.readers import file_keys

        if self._image_keys is None:
            resolved = resolve_image_paths(self.data_cfg)
            if self.shard is not None:
                resolved = resolved[shard_rows(len(resolved), *self.shard)]
            self._image_keys = (resolved, file_keys(resolved))
        return self._image_keys

    def outdated(self) -> str | None:
        from patchcfg.data.readers import files_digest

        if self.merge and self.shard_folders():
            return f"embed of '{self.config['name']}': joining the shards in {self.experiment.dir / SHARDS}"
        recorded = self.stage_run.read_summary().get("files")
        if recorded is None or files_digest(self.image_keys()[1]) == recorded:
            return None
        return (f"embed of '{self.config['name']}': images were added, removed or replaced since the last embed; "
                "embedding the new and changed ones")

    def reusable(self, keys: list[tuple]):
        """(features, into, rows): the last complete embed's ``rows`` whose image is unchanged (same
        path, modification time and size), for rows ``into`` of this one; None when there are none."""
        import pandas as pd

        folder = self.stage_run.dir
        if self.shard is not None and not (folder / "features.npy").is_file():
            folder = self.experiment.dir / self.name  # a new shard: the rows of the last merged embed
        try:
            index = pd.read_csv(folder / "index.csv")
            features = np.load(folder / "features.npy", mmap_mode="r")
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

        shards, there = self.shard_folders(), self.experiment.dir / SHARDS
        if self.merge:
            self.shards = self.mergeable(shards)
        elif self.shard is not None and set(shards) - {self.shard[1]}:
            counts = ", ".join(map(str, sorted(set(shards) - {self.shard[1]})))
            raise UserError(f"{there} holds shards of N = {counts}, and this is --shard {self.shard[0]}/"
                            f"{self.shard[1]}: shard with that N, or remove {there} to shard anew")
        elif self.shard is None and shards:
            raise UserError(f"{there} holds shards not merged yet: run `patchcfg embed CONFIG --merge` to join them "
                            f"into {self.experiment.dir / self.name}, or remove {there} to embed in one run")

        if self.engine == "ray":
            from patchcfg.tasks.ray_engine import connect

            connect(self.address)  # Ray missing or the cluster unreachable: said before any image is read
        # several machines: each embeds with its own devices (the chief writes); nothing to all-gather
        if self.strategy is None and distribute.resolve_name(self.config["distribute"]["strategy"]) == "multi_worker":
            several = len(tf.config.list_physical_devices("GPU")) > 1
            self.strategy = distribute.make_strategy("mirrored" if several else "default")

    def mergeable(self, shards: dict[int, list[Path]]) -> list[Path]:
        """The folders of shards 0..N-1, in order; a :class:`UserError` naming every shard missing,
        incomplete or of another config, encoder or images than now."""
        from patchcfg.data.readers import files_digest

        there = self.experiment.dir / SHARDS
        if not shards:
            raise UserError(f"embed --merge: no shards in {there}; run `patchcfg embed CONFIG --shard i/N` "
                            "for i = 0 .. N-1 first")
        if len(shards) > 1:
            raise UserError(f"embed --merge: {there} holds shards of N = {', '.join(map(str, sorted(shards)))}; "
                            "remove those of the N not wanted")
        (n,) = shards
        keys = self.image_keys()[1]
        inputs, fingerprint, problems, folders = self.stage_run.inputs, self.fingerprint(), [], []
        for i in range(n):
            run = self.experiment.stage(f"{SHARDS}/{i}-of-{n}", own_lock=True)
            folders.append(run.dir)
            status, summary = run.status() or {}, run.read_summary()
            if status.get("state") != "complete":
                problems.append(f"{i}-of-{n} {'missing' if not run.dir.is_dir() else status.get('state') or 'not run'}")
            elif summary.get("config_sha256") != fingerprint:
                problems.append(f"{i}-of-{n} ran with another config")
            elif status.get("inputs") != inputs:
                problems.append(f"{i}-of-{n} ran with another encoder ({summary.get('encoder')})")
            elif summary.get("files") != files_digest(keys[shard_rows(len(keys), i, n)]):
                problems.append(f"{i}-of-{n} embedded images changed since")
        if problems:
            raise UserError(f"embed --merge: shards {'; '.join(problems)}. Run `patchcfg embed CONFIG --shard i/{n}` "
                            "for those, then --merge again")
        return folders

    def join(self) -> dict:
        """``--merge``: the shards' rows, in shard order, into ``features.npy`` and ``index.csv``."""
        import pandas as pd

        from patchcfg.atomic import atomic_write_text
        from patchcfg.data.readers import files_digest
        from patchcfg.tasks.embed import FeatureWriter

        indexes = [pd.read_csv(folder / "index.csv") for folder in self.shards]
        writer = FeatureWriter(self.stage_run.dir, sum(map(len, indexes)), self.params["dtype"],
                               {"shards": [str(folder) for folder in self.shards]}, positions=np.zeros(0, np.int64))
        offset = 0
        for folder, index in zip(self.shards, indexes, strict=True):
            if len(index):
                writer.reuse(np.load(folder / "features.npy", mmap_mode="r"),
                             into=np.arange(offset, offset + len(index)), rows=np.arange(len(index)))
            offset += len(index)
            self.skipped += self.experiment.stage(f"{SHARDS}/{folder.name}").read_summary()["skipped"]
        atomic_write_text(self.stage_run.path("index.csv"), pd.concat(indexes).to_csv(index=False))
        writer.publish()
        shutil.rmtree(self.experiment.dir / SHARDS)
        return {"images": offset, "dimensions": writer.dimensions, "encoder": self.source, "dtype": self.params["dtype"],
                "files": files_digest(self.image_keys()[1]), "shards": len(self.shards),
                "config_sha256": self.fingerprint()}

    def execute(self) -> dict:
        import pandas as pd

        from patchcfg.atomic import atomic_write_text
        from patchcfg.data import crops
        from patchcfg.data.readers import files_digest
        from patchcfg.tasks.embed import FeatureWriter, embed_paths

        if self.merge:
            return self.join() if self.chief else {}
        run, params = self.stage_run, self.params
        resolved, all_keys = self.image_keys()
        paths = self.readable(resolved)
        replicas = int(self.strategy.num_replicas_in_sync)
        summary = {"images": len(paths), "dimensions": 0, "encoder": self.source, "dtype": params["dtype"],
                   "replicas": replicas, "files": files_digest(all_keys), "config_sha256": self.fingerprint(),
                   "engine": self.engine}
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
            n = crops.crops_of(self.data_cfg)  # with crops: a batch of images is n² times as many cells
            remaining = [paths[i] for i in todo[writer.done:]]
            if self.engine == "ray":  # each actor one device: batch_size images (cells) a batch
                from patchcfg.tasks.embed import ENCODERS, Embedder
                from patchcfg.tasks.ray_engine import BATCHES_PER_CALL, map_in_order

                per_actor = max(1, int(params["batch_size"]) // (n * n))
                constructor = {"config": self.config, "experiment_dir": os.path.abspath(self.experiment.dir),
                               "which": self.which if self.which in ENCODERS else os.path.abspath(self.which),
                               "batch_size": per_actor}
                computed = map_in_order(remaining, self.ray_actor or Embedder, constructor, "features",
                                        batch_size=per_actor * BATCHES_PER_CALL, address=self.address,
                                        actors=self.actors, say=self.say)
            else:
                computed = embed_paths(self.encoder, remaining, self.data_cfg,
                                       max(1, int(params["batch_size"]) * replicas // (n * n)), self.strategy)
            for features in computed:
                writer.write(features)
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
