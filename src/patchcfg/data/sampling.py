"""Which labelled rows to train on: patchwork's stratified sampling and Musket's negatives.

:class:`StratifiedSampler` is a small estimator-like object (NumPy only): the constructor stores
parameters, ``fit(labels, trainable_mask)`` learns the strata (attributes ending in ``_``) and
``sample(n, rng)`` returns row indices. :func:`make_labelled_dataset` turns it into an endless
``tf.data`` stream of ``(images, labels)`` batches (labels multi-hot, -1 = unknown).

Stratified sampling (patchwork): every (class, value) pair with value 0 or 1 is a stratum holding
the rows whose label for that class is known and equal to the value, so a partially labelled row
belongs to one stratum per known class. A draw picks a stratum with probability uniform over the
non-empty strata (``weighting: class``), proportional to its size (``instance``) or to the square
root of its size (``squareroot``), then a row uniformly within it. ``type: uniform`` draws rows
uniformly instead. Rows with no known label, excluded rows and validation rows are never drawn.

Negatives (Musket): ``real`` keeps every labelled row; ``none`` only rows with at least one
positive; an integer N draws N rows without any positive for each row drawn with one (rows with
positives are drawn by the weighting scheme, rows without uniformly).
"""

from __future__ import annotations

import itertools

import numpy as np

from patchcfg.errors import ConfigError, DataError

WEIGHTINGS = ("class", "instance", "squareroot")
TYPES = ("stratified", "uniform")


def _parse_negatives(value):
    if isinstance(value, bool):
        raise ConfigError(f"sampler.negatives: expected none, real or a number, got {value!r}")
    if value is None or value == "none":
        return "none"
    if value == "real":
        return "real"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"sampler.negatives: expected none, real or a number >= 0, got {value!r}") from None
    if number < 0 or str(number) != str(value).strip():
        raise ConfigError(f"sampler.negatives: expected none, real or a whole number >= 0, got {value!r}")
    return number


class StratifiedSampler:
    """Draw training rows of a partially labelled multi-hot table.

    Parameters: ``type`` (stratified | uniform), ``weighting`` (class | instance | squareroot),
    ``negatives`` (none | real | N).

    Learned by :meth:`fit`: ``rows_`` (every row that can be drawn), ``positive_rows_`` /
    ``negative_rows_`` (rows with / without a known positive), ``strata_`` ((m, 2) array of
    (class index, value)), ``strata_rows_`` (rows of each stratum), ``strata_p_`` (probability of
    drawing each stratum), ``negatives_`` (parsed negatives).

    Example::

        sampler = StratifiedSampler(weighting="squareroot").fit(table.label_matrix(), table.train_rows())
        rows = sampler.sample(256, np.random.default_rng(0))
    """

    def __init__(self, type: str = "stratified", weighting: str = "class", negatives="real"):
        self.type = type
        self.weighting = weighting
        self.negatives = negatives

    def __repr__(self):
        return (f"StratifiedSampler(type={self.type!r}, weighting={self.weighting!r}, "
                f"negatives={self.negatives!r})")

    def get_params(self) -> dict:
        return {"type": self.type, "weighting": self.weighting, "negatives": self.negatives}

    def fit(self, labels, trainable_mask=None) -> StratifiedSampler:
        """Learn the strata from ``labels`` ((n, classes); 1, 0, and -1 or NaN for unknown).

        ``trainable_mask`` ((n,) bool, default all True): rows that may be drawn; pass
        ``LabelTable.train_rows()`` so excluded and validation rows never are.
        """
        if self.type not in TYPES:
            raise ConfigError(f"sampler.type: {self.type!r} is not one of: {', '.join(TYPES)}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"sampler.weighting: {self.weighting!r} is not one of: {', '.join(WEIGHTINGS)}")
        negatives = _parse_negatives(self.negatives)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim == 1:
            labels = labels[:, None]
        labels = np.where(np.isnan(labels), -1.0, labels)
        n = len(labels)
        mask = np.ones(n, bool) if trainable_mask is None else np.asarray(trainable_mask, bool)
        if mask.shape != (n,):
            raise ValueError(f"trainable_mask has shape {mask.shape}, expected ({n},)")
        known = labels >= 0
        positive = (labels == 1).any(axis=1)
        usable = mask & known.any(axis=1)
        self.positive_rows_ = np.flatnonzero(usable & positive)
        self.negative_rows_ = np.flatnonzero(usable & ~positive)
        if negatives == "real":
            pool = np.flatnonzero(usable)
        else:
            pool = self.positive_rows_
        if negatives not in ("real", "none") and negatives > 0 and len(self.negative_rows_) == 0:
            raise DataError(f"sampler.negatives: {negatives} needs rows without any positive label; "
                            "there are none among the training rows")
        if len(pool) == 0:
            what = "with a positive label" if negatives != "real" else "with a known label"
            raise DataError(f"no training rows {what} to sample from (excluded and validation rows "
                            "are never drawn)")
        self.negatives_ = negatives
        self.pool_ = pool
        strata, strata_rows = [], []
        in_pool = np.zeros(n, bool)
        in_pool[pool] = True
        for c in range(labels.shape[1]):
            for value in (0.0, 1.0):
                rows = np.flatnonzero(in_pool & (labels[:, c] == value))
                if len(rows):
                    strata.append((c, int(value)))
                    strata_rows.append(rows)
        self.strata_ = np.array(strata, dtype=np.int64).reshape(-1, 2)
        self.strata_rows_ = strata_rows
        sizes = np.array([len(r) for r in strata_rows], dtype=np.float64)
        weights = {"class": np.ones_like(sizes), "instance": sizes, "squareroot": np.sqrt(sizes)}[self.weighting]
        self.strata_p_ = weights / weights.sum()
        rows = set(pool.tolist())
        if negatives not in ("real", "none") and negatives > 0:
            rows |= set(self.negative_rows_.tolist())
        self.rows_ = np.array(sorted(rows), dtype=np.int64)
        self.n_rows_ = n
        return self

    def _draw_pool(self, n, rng, return_strata):
        if self.type == "uniform":
            return rng.choice(self.pool_, size=n), np.full(n, -1, np.int64)
        strata = rng.choice(len(self.strata_p_), size=n, p=self.strata_p_)
        out = np.empty(n, np.int64)
        for s in np.unique(strata):
            where = np.flatnonzero(strata == s)
            out[where] = rng.choice(self.strata_rows_[s], size=len(where))
        return out, strata.astype(np.int64)

    def sample(self, n: int, rng=None, return_strata: bool = False):
        """``n`` row indices (with replacement). ``rng``: a NumPy Generator or a seed.

        With ``return_strata``, also the stratum index of each draw (index into ``strata_``;
        -1 for uniform draws and for negatives drawn under ``negatives: N``).
        """
        if not hasattr(self, "strata_p_"):
            raise RuntimeError("StratifiedSampler.sample before fit")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        n = int(n)
        negatives = self.negatives_
        if negatives in ("real", "none") or negatives == 0:
            rows, strata = self._draw_pool(n, rng, return_strata)
        else:
            n_neg = int(round(n * negatives / (negatives + 1)))
            pos_rows, pos_strata = self._draw_pool(n - n_neg, rng, return_strata)
            neg_rows = rng.choice(self.negative_rows_, size=n_neg)
            rows = np.concatenate([pos_rows, neg_rows])
            strata = np.concatenate([pos_strata, np.full(n_neg, -1, np.int64)])
            order = rng.permutation(n)
            rows, strata = rows[order], strata[order]
        return (rows, strata) if return_strata else rows

    def batches(self, batch_size: int, seed: int = 0, stream: int = 0):
        """Endless row-index batches, reproducible from (seed, stream)."""
        rng = np.random.default_rng([int(seed), int(stream)])
        while True:
            yield self.sample(batch_size, rng)


def sampler_from_config(sampler_cfg: dict, negatives=None) -> StratifiedSampler:
    """The sampler of a resolved ``sampler`` section (``finetune.sampler``); ``negatives``, when
    given, replaces the section's (a training phase's own ``negatives``)."""
    return StratifiedSampler(type=sampler_cfg["type"], weighting=sampler_cfg["weighting"],
                             negatives=sampler_cfg["negatives"] if negatives is None else negatives)


def make_labelled_dataset(paths, labels, data_cfg: dict, *, sampler: StratifiedSampler, batch_size: int,
                          trainable_mask=None, seed: int = 0, augmenter=None, views: int = 1, cache=None,
                          memo: dict | None = None):
    """An endless ``tf.data`` stream of ``(x, labels)`` batches drawn by ``sampler``.

    ``paths`` and ``labels`` are aligned row by row (filter both after ``check_images``).
    ``labels``: (n, classes) with 1/0 and -1 (or NaN) for unknown; they come out as float32 with
    -1 kept, so a masked loss can ignore unknowns. ``sampler`` is fitted here if it is not yet
    (with ``trainable_mask``). ``x`` is an image batch, or a tuple of ``views`` augmented batches.
    Each iteration of the dataset draws a new, reproducible sequence (seed, iteration number).

    ``cache`` (None: ``data.cache``): with a cache, the drawable images are decoded once into
    memory and batches are gathered from there; without, each drawn image is decoded on the fly.
    There is no epoch: take ``steps`` batches (e.g. ``len(rows) // batch_size``). ``memo``: a dict
    the caller keeps from one epoch's dataset to the next; the images decoded for the cache are kept
    there (the latest set of rows only), so they are decoded once, not every epoch.
    """
    import tensorflow as tf

    from patchcfg.data import loading

    cfg = loading._cfg(data_cfg)
    paths = [str(p) for p in paths]
    labels = np.asarray(labels, np.float32)
    if labels.ndim == 1:
        labels = labels[:, None]
    labels = np.where(np.isnan(labels), -1.0, labels).astype(np.float32)
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label rows for {len(paths)} paths")
    if not hasattr(sampler, "strata_p_"):
        sampler.fit(labels, trainable_mask)
    rows = sampler.rows_
    cache = cfg.get("cache") if cache is None else (cache or None)
    counter = itertools.count()
    classes = labels.shape[1]

    if cache:
        file_cache = None if cache == "memory" else str(cache)
        key = (tuple(paths[i] for i in rows), file_cache)
        if memo is not None and memo.get("key") == key:
            store, channels = memo["store"], memo["channels"]
        else:
            ds_images, channels = loading.image_dataset([paths[i] for i in rows], cfg)
            if file_cache:
                ds_images = ds_images.cache(file_cache)
            store = np.concatenate([b.numpy() for b in ds_images.batch(256).prefetch(tf.data.AUTOTUNE)], 0)
            if memo is not None:
                memo.clear()
                memo.update(key=key, store=store, channels=channels)
        position = np.full(len(paths), -1, np.int64)
        position[rows] = np.arange(len(rows))
        h, w = store.shape[1:3]

        def generate():
            for block in sampler.batches(batch_size, seed, next(counter)):
                yield store[position[block]], labels[block]

        ds = tf.data.Dataset.from_generator(generate, output_signature=(
            tf.TensorSpec([batch_size, h, w, channels], tf.float32),
            tf.TensorSpec([batch_size, classes], tf.float32)))
    else:
        infos, channels = loading._infos_or_raise([paths[i] for i in rows], cfg)
        kinds = {i.kind for i in infos}
        load = loading._loader(cfg, kinds, channels)
        kind_of = np.zeros(len(paths), np.int32)
        kind_of[rows] = [0 if i.kind == "tf" else 1 for i in infos]
        path_table = tf.constant(paths)
        kind_table = tf.constant(kind_of)
        label_table = tf.constant(labels)

        def generate_rows():
            yield from sampler.batches(batch_size, seed, next(counter))

        ds = tf.data.Dataset.from_generator(generate_rows, output_signature=tf.TensorSpec([batch_size], tf.int64))
        ds = ds.unbatch().map(
            lambda i: (load(tf.gather(path_table, i), tf.gather(kind_table, i)), tf.gather(label_table, i)),
            num_parallel_calls=loading._parallel(cfg), deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
    return loading.finish_batches(ds, cfg, channels, augmenter=augmenter, views=views, seed=seed,
                                  with_labels=True)
