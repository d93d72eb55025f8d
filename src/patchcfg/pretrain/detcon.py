"""DetCon: contrast the features of image regions, not of whole images.

Hénaff, Koppula, Alayrac, van den Oord, Vinyals & Carreira, "Efficient Visual Pretraining with
Contrastive Detection", ICCV 2021 (DetCon_S, the SimCLR-style objective). Every image gets region
masks once, before training: Felzenszwalb–Huttenlocher segments (``masks: felzenszwalb``, its
``num_masks`` largest segments, written to ``segments-<key>.npy`` in the stage's folder and read
batch by batch from there, so they are not held in memory and a resumed run reuses them) or the
cells of a ``grid`` x ``grid`` grid (``masks: grid``, the paper's spatial heuristic). Each view's
masks take the view's flips, crops and warps (not its colour changes). The encoder's feature map is
average-pooled inside each mask (masks resized to the map by area), the projection head embeds each
pooled region, and a mask's embedding in view 1 must pick the same mask's embedding in view 2 among
every mask of every image in the global batch (InfoNCE at ``temperature``, both directions). Masks
that a crop removed from either view take no part. The encoder saved is the backbone with its
pooling, like every other method's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.region_infonce import region_infonce
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod
from patchcfg.train.distribute import gather_rows
from patchcfg.train.loop import epoch_seed

#: a mask whose area on the feature map is below this fraction of one cell does not count
MIN_AREA = 0.05


def felzenszwalb_segments(images, count: int, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """(N, H, W) int8 segment ids: each image's ``count`` largest Felzenszwalb–Huttenlocher segments
    numbered 0.. by size, every other pixel -1."""
    from skimage.segmentation import felzenszwalb

    out = np.full(np.asarray(images).shape[:3], -1, np.int8)
    for i, image in enumerate(images):
        channel_axis = -1 if image.shape[-1] > 1 else None
        labels = felzenszwalb(image if channel_axis else image[..., 0], scale=scale, sigma=sigma,
                              min_size=min_size, channel_axis=channel_axis)
        sizes = np.bincount(labels.ravel())
        for rank, segment in enumerate(np.argsort(-sizes, kind="stable")[:count]):
            out[i][labels == segment] = rank
    return out


#: images segmented per block when the segment file is written
SEGMENT_BLOCK = 256


def stored_segments(folder, key: dict, count: int, blocks) -> np.ndarray:
    """(N, H, W) int8 segment ids, memory-mapped read-only from ``folder/segments-<key>.npy``.

    ``key`` names what the segments depend on (the images, ``data``, the mask settings); its hash
    names the file, so a resumed run finds and reuses it and a changed setting computes another.
    When absent, ``blocks(start)`` (consecutive (n, H, W) blocks of the ``count`` images from row
    ``start`` on) fills it through :class:`patchcfg.tasks.embed.FeatureWriter`: written under a temporary
    name, recorded after each block (an interrupted run continues after the last one recorded),
    renamed when whole. Files of other keys are removed.
    """
    from patchcfg.tasks.embed import FeatureWriter

    folder = Path(folder)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = f"segments-{digest}"
    path = folder / f"{name}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        writer = FeatureWriter(folder, count, "int8", key, name=name)
        for block in blocks(writer.done):
            writer.write(block)
            writer.checkpoint()
        writer.publish()
        for other in folder.glob("segments-*"):
            if not other.name.startswith(name):
                other.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def grid_segments(count_images: int, imshape, grid: int) -> np.ndarray:
    """(N, H, W) int8 segment ids of a ``grid`` x ``grid`` grid of cells (row-major), the same for every image."""
    height, width = (int(v) for v in imshape)
    rows = np.minimum(np.arange(height) * grid // height, grid - 1)
    cols = np.minimum(np.arange(width) * grid // width, grid - 1)
    cells = (rows[:, None] * grid + cols[None, :]).astype(np.int8)
    return np.broadcast_to(cells, (count_images, height, width))


def pool_regions(feature_maps, masks):
    """``(pooled (B, K, D), area (B, K))``: the mean feature under each mask (masks resized to the
    map by area averaging) and each mask's area in feature-map cells."""
    size = tf.shape(feature_maps)[1:3]
    weights = tf.image.resize(masks, size, method="area")
    weights = tf.cast(weights, feature_maps.dtype)
    area = tf.reduce_sum(weights, axis=[1, 2])
    pooled = tf.einsum("bhwd,bhwk->bkd", feature_maps, weights) / tf.maximum(area, 1e-6)[..., None]
    return pooled, tf.cast(area, tf.float32)


@dataclass(frozen=True)
class Felzenszwalb:
    """``pretrain.felzenszwalb``: skimage's segmentation parameters."""

    scale: float
    sigma: float
    min_size: int


@register("detcon")
class DetCon(TwoViewMethod):
    """DetCon_S: region-level contrastive learning with segment masks that follow the views."""

    summary = "contrast the pooled features of image regions (segments) across views (Henaff et al. 2021)."
    config_keys = {
        "masks": {
            "description": ("(detcon, detcon_b) Where the regions come from: felzenszwalb = each image's "
                            "largest Felzenszwalb-Huttenlocher segments (computed once, before training); "
                            "grid = the cells of a grid x grid grid."),
            "enum": ["felzenszwalb", "grid"],
            "default": "felzenszwalb",
        },
        "num_masks": {
            "description": ("(detcon, detcon_b) Felzenszwalb segments kept per image (the largest); pixels "
                            "of smaller segments belong to no region."),
            "type": "integer",
            "minimum": 1,
            "maximum": 64,
            "default": 8,
        },
        "grid": {
            "description": "(detcon, detcon_b) Cells per side of the grid masks (grid x grid regions).",
            "type": "integer",
            "minimum": 1,
            "maximum": 8,
            "default": 4,
        },
        "felzenszwalb": {
            "description": ("(detcon, detcon_b) Parameters of skimage.segmentation.felzenszwalb on the "
                            "images at data.imshape in [0, 1]."),
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "scale": {
                    "description": "Larger = larger segments.",
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "default": 100,
                },
                "sigma": {
                    "description": "Gaussian smoothing before segmenting.",
                    "type": "number",
                    "minimum": 0,
                    "default": 0.5,
                },
                "min_size": {
                    "description": "Smallest segment, in pixels.",
                    "type": "integer",
                    "minimum": 1,
                    "default": 10,
                },
            },
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        masks: str
        num_masks: int
        grid: int
        felzenszwalb: Felzenszwalb

    def __init__(self, config, paths, **kwargs):
        super().__init__(config, paths, **kwargs)
        self.mask_source = self.params.masks
        grid = self.params.grid
        self.num_masks = grid * grid if self.mask_source == "grid" else self.params.num_masks
        self._segments = None
        self.feature_maps = None

    # ------------------------------------------------------------------ models
    def build_encoder(self) -> keras.Model:
        """The backbone's feature map (trained on regions) and the pooled encoder that is saved."""
        from patchcfg.models.backbones import build_backbone

        backbone = self.backbone_cfg
        self.feature_maps = self._encoder or build_backbone({**backbone, "pooling": "none"}, self.input_shape)
        if len(self.feature_maps.output_shape) != 4:
            raise ValueError("DetCon needs an encoder that gives a feature map (batch, h, w, D)")
        inputs = keras.Input(shape=self.input_shape, name="image")
        pool = keras.layers.GlobalMaxPooling2D if backbone["pooling"] == "max" \
            else keras.layers.GlobalAveragePooling2D
        return keras.Model(inputs, pool(name="pool")(self.feature_maps(inputs)), name=self.feature_maps.name)

    # ------------------------------------------------------------------ masks and data
    def segments(self) -> np.ndarray:
        """(N, H, W) int8 segment ids of every image: the grid's cells (one map, broadcast), or the
        Felzenszwalb segments computed once into a file in :attr:`workdir` and memory-mapped, so
        that a batch's masks are read from disk when the batch needs them (:func:`stored_segments`)."""
        if self._segments is None:
            if self.mask_source == "grid":
                self._segments = grid_segments(len(self.paths), self.imshape, self.params.grid)
            else:
                from patchcfg.data.readers import file_keys, files_digest

                key = {"files": files_digest(file_keys(self.paths)), "data": self.data_cfg, "num_masks": self.num_masks,
                       "felzenszwalb": dataclasses.asdict(self.params.felzenszwalb)}
                self._segments = stored_segments(self.workdir(), key, len(self.paths), self._felzenszwalb_blocks)
        return self._segments

    def _felzenszwalb_blocks(self, start: int):
        """The Felzenszwalb segments of the images from ``start`` on, :data:`SEGMENT_BLOCK` images at a time."""
        from patchcfg.data.loading import image_dataset, one_pass

        fh = self.params.felzenszwalb
        images, _ = image_dataset(self.paths[start:], self.data_cfg)
        for block in one_pass(images.batch(SEGMENT_BLOCK).prefetch(tf.data.AUTOTUNE)):
            yield felzenszwalb_segments(block.numpy(), self.num_masks, fh.scale, fh.sigma, fh.min_size)

    def dataset(self, epoch: int) -> tf.data.Dataset:
        """Per global batch ``((view1, masks1), (view2, masks2))``: two augmented views and their masks
        (B, H, W, K), shuffled and augmented as a function of (seed, epoch)."""
        from patchcfg.data.loading import batch_seeds, image_dataset, normalizer

        seed = epoch_seed(self.seed, epoch)
        segments = self.segments()
        # each image carries its row number; its segments are looked up per batch (a graph
        # constant of every segment map would be capped at 2 GB)
        rows = np.arange(len(self.paths), dtype=np.int64)[:, None]
        images, channels = image_dataset(self.paths, self.data_cfg, labels=rows, shuffle_paths=True, seed=seed)
        if self.epoch_draws() > len(self.paths):
            images = images.repeat()
        augmenter, normalize = self.augmenter(), normalizer(self.data_cfg, channels)
        height, width = self.imshape
        count = self.num_masks

        def lookup(batch_rows):
            return segments[batch_rows[:, 0]]

        def views(batch, batch_seed):
            pixels, batch_rows = batch
            ids = tf.numpy_function(lookup, [batch_rows], tf.int8, stateful=False)
            masks = tf.one_hot(tf.cast(tf.reshape(ids, [-1, height, width]), tf.int32), count, dtype=tf.float32)
            seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(
                batch_seed, augmenter.seed), 2)
            view1, masks1 = augmenter(pixels, seeds[0], masks=masks)
            view2, masks2 = augmenter(pixels, seeds[1], masks=masks)
            return (normalize(view1), masks1), (normalize(view2), masks2)

        batches = tf.data.Dataset.zip(images.batch(self.global_batch_size, drop_remainder=True), batch_seeds(seed))
        return batches.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ loss
    def contrastive_loss(self, view1, view2):
        """Per image: the mean region loss, the regions' accuracy and how many regions counted."""
        (view1, masks1), (view2, masks2) = view1, view2
        n = tf.shape(view1)[0]
        maps = self.feature_maps(tf.concat([view1, view2], axis=0), training=True)
        pooled, area = pool_regions(maps, tf.concat([masks1, masks2], axis=0))
        present = area >= MIN_AREA
        regions = tf.reshape(pooled, [-1, tf.shape(pooled)[-1]])
        z = tf.cast(self.head(regions, training=True), tf.float32)
        z = tf.reshape(z, [2, -1, tf.shape(z)[-1]])  # [view, image * mask, d]
        present = tf.reshape(present, [2, -1])
        valid = tf.logical_and(present[0], present[1])
        (z1_all, z2_all, valid_all), offset = gather_rows(z[0], z[1], tf.cast(valid, tf.float32)[:, None])
        loss, accuracy = region_infonce(z[0], z[1], valid, self.temperature, z1_all=z1_all, z2_all=z2_all,
                                        valid_all=valid_all[:, 0] > 0.5, offset=offset)
        per_image_count = tf.reduce_sum(tf.reshape(tf.cast(valid, tf.float32), [n, -1]), axis=1)
        per_image = tf.reduce_sum(tf.reshape(loss, [n, -1]), axis=1) / tf.maximum(per_image_count, 1.0)
        per_image_acc = tf.reduce_sum(tf.reshape(accuracy, [n, -1]), axis=1) / tf.maximum(per_image_count, 1.0)
        return per_image, {"region_acc": per_image_acc, "regions_per_image": per_image_count}, {}

    def on_train_begin(self, loop) -> None:
        started = time.perf_counter()
        segments = self.segments()  # once, before the data pipeline (built in a background thread) needs them
        if self.mask_source == "felzenszwalb":
            loop.log(f"detcon: the {self.num_masks} largest Felzenszwalb segments of {len(self.paths)} images "
                     f"in {segments.filename} ({time.perf_counter() - started:.1f} s)")
