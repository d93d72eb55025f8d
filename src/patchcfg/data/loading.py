"""Images in, batches out: the validation pass and the ``tf.data`` builder.

Typical use (what the trainers do)::

    from patchcfg.data.images import resolve_image_paths
    from patchcfg.data.loading import check_images, make_dataset
    from patchcfg.data.augment import build_augmenter

    paths = resolve_image_paths(cfg["data"])
    paths, skipped = check_images(paths, cfg["data"]["on_bad_image"], data_cfg=cfg["data"])
    aug = build_augmenter(cfg["augmentation"], cfg["data"]["imshape"], cfg["data"]["channels"], seed)
    ds = make_dataset(paths, cfg["data"], batch_size=256, shuffle=True, seed=seed, repeat=True,
                      augmenter=aug, views=2)          # yields (view1, view2)

Pipeline: paths (shuffled first when not cached) -> parallel decode + channel fix + resize
(float32 [0, 1]) -> optional cache -> shuffle -> repeat -> batch -> augment (parallel, one
stateless seed per batch from ``tf.data.Dataset.random``, so results are reproducible and differ
from epoch to epoch) -> normalize -> prefetch. Formats and value rules: :mod:`patchcfg.data.readers`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from patchcfg.data.passes import one_pass
from patchcfg.data.readers import ImageInfo, probe, read_unit
from patchcfg.errors import ConfigError, DataError

__all__ = ["check_images", "make_dataset", "load_images", "output_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _cfg(data_cfg: dict | None) -> dict:
    """The ``data`` section with the schema's defaults (a resolved config has them already)."""
    from patchcfg.config import with_defaults

    return with_defaults("data", data_cfg or {})


def _fit_reason(info: ImageInfo, channels: int, extra: str, target: int | None) -> str | None:
    """Why a decodable file cannot give ``channels`` channels (None if it can)."""
    n = info.channels
    if n in (1, 2) or n == channels:
        return None
    if n > channels:
        if extra == "keep" and target is not None and n != target:
            return (f"has {n} channels but other files have {target} (extra_channels: keep needs one "
                    "channel count; use extra_channels: truncate or set data.channels)")
        return None
    return (f"has {n} channels, data.channels is {channels} (only 1-channel and 2-channel "
            "grayscale images are repeated up)")


def output_channels(infos, data_cfg: dict) -> int:
    """Channels the pipeline yields: ``channels``, or with ``extra_channels: keep`` the files' count."""
    cfg = _cfg(data_cfg)
    channels = int(cfg["channels"])
    if cfg["extra_channels"] != "keep":
        return channels
    more = [i.channels for i in infos if isinstance(i, ImageInfo) and i.channels > channels]
    return max(more) if more else channels


def check_images(paths, on_bad_image: str = "error", *, data_cfg: dict | None = None, workers=None):
    """The validation pass: open and decode every file once (thread pool, cached per file).

    Returns ``(good_paths, skipped)`` where ``skipped`` is a list of ``{"path", "reason"}`` for
    files left out (missing, empty, corrupt, truncated, unsupported format, NaN values, or, when
    ``data_cfg`` is given, a channel count that cannot be fitted). With ``on_bad_image="error"``
    the first bad file raises :class:`~patchcfg.errors.DataError` naming it (exit code 2).
    The trainer puts ``skipped`` (and its length) in summary.json.
    """
    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_image: {on_bad_image!r} is not one of: error, skip")
    paths = [str(p) for p in paths]
    infos = probe(paths, workers=workers)
    reasons = [info if isinstance(info, str) else None for info in infos]
    if data_cfg is not None:
        cfg = _cfg(data_cfg)
        target = output_channels(infos, cfg)
        for i, info in enumerate(infos):
            if reasons[i] is None:
                reasons[i] = _fit_reason(info, int(cfg["channels"]), cfg["extra_channels"], target)
    bad = [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]
    if bad and on_bad_image == "error":
        more = f" (and {len(bad) - 1} more bad image(s))" if len(bad) > 1 else ""
        path, reason = bad[0]
        raise DataError(f"{path}: {reason}{more}; fix or remove it, or set data.on_bad_image: skip")
    good = [p for p, r in zip(paths, reasons, strict=True) if r is None]
    return good, [{"path": p, "reason": r} for p, r in bad]


# --------------------------------------------------------------------------- graph pieces

def _fix_channels(image, channels: int, out_channels: int):
    """(H, W, n) with dynamic n -> (H, W, out_channels); see data.channels / extra_channels."""
    n = tf.shape(image)[-1]

    def repeat_first():
        return tf.repeat(image[..., :1], out_channels, axis=-1)

    def first_k():
        if out_channels == 1:
            return tf.cond(n >= 3, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
        return image[..., :out_channels]

    out = tf.cond(n <= 2, repeat_first, first_k)
    return tf.ensure_shape(out, [None, None, out_channels])


def _resize(image, imshape, method: str):
    target = tf.constant(imshape, tf.int32)
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], target))
    antialias = method in ("bilinear", "bicubic")
    resized = tf.cond(same, lambda: image,
                      lambda: tf.image.resize(image, target, method=method, antialias=antialias))
    return tf.ensure_shape(resized, [imshape[0], imshape[1], image.shape[-1]])


def _decode_tf(path):
    """A file the graph decodes (PNG, JPEG, GIF), as float32 in [0, 1] with its own channels."""
    return tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.float32, expand_animations=False)


def _loader(cfg: dict, kinds: set[str], out_channels: int):
    imshape = [int(v) for v in cfg["imshape"]]
    channels = int(cfg["channels"])

    def decode_py(path):
        image = tf.numpy_function(read_unit, [path], tf.float32, stateful=False)
        return tf.ensure_shape(image, [None, None, None])

    def load(path, kind):
        if kinds == {"tf"}:
            image = _decode_tf(path)
        elif kinds == {"py"}:
            image = decode_py(path)
        else:
            image = tf.cond(tf.equal(kind, 0), lambda: _decode_tf(path), lambda: decode_py(path))
        image = _fix_channels(image, channels, out_channels)
        return tf.clip_by_value(_resize(image, imshape, cfg["resize"]), 0.0, 1.0)

    return load


def _normalizer(cfg: dict, channels: int):
    mode = cfg["normalize"]
    if mode == "unit":
        return None
    if mode == "per_image":
        return tf.image.per_image_standardization
    if mode == "imagenet":
        if channels != 3:
            raise ConfigError(f"data.normalize: imagenet needs 3 channels (the images have {channels})")
        mean = tf.constant(IMAGENET_MEAN, tf.float32)
        std = tf.constant(IMAGENET_STD, tf.float32)
        return lambda x: (x - mean) / std
    raise ConfigError(f"data.normalize: {mode!r} is not one of: unit, imagenet, per_image")


def normalizer(data_cfg: dict, channels: int):
    """``data.normalize`` as a function of an image batch in [0, 1] (the identity for ``unit``)."""
    return _normalizer(_cfg(data_cfg), channels) or (lambda x: x)


def _parallel(cfg: dict):
    value = cfg["num_parallel_calls"]
    return tf.data.AUTOTUNE if value in (None, "auto") else int(value)


def _infos_or_raise(paths, cfg):
    infos = probe(paths)
    bad = [(p, i) for p, i in zip(paths, infos, strict=True) if isinstance(i, str)]
    if bad:
        raise DataError(f"{bad[0][0]}: {bad[0][1]}"
                        + (f" (and {len(bad) - 1} more bad image(s))" if len(bad) > 1 else "")
                        + "; run check_images first to skip bad files")
    target = output_channels(infos, cfg)
    for path, info in zip(paths, infos, strict=True):
        reason = _fit_reason(info, int(cfg["channels"]), cfg["extra_channels"], target)
        if reason:
            raise DataError(f"{path}: {reason}")
    return infos, target


def image_dataset(paths, data_cfg: dict, *, labels=None, shuffle_paths: bool = False, seed: int = 0):
    """Unbatched ``(H, W, C)`` float32 images in [0, 1] (or ``(image, label)`` pairs), decoded in
    parallel, without cache or augmentation. Returns ``(dataset, channels)``.

    Every path is checked first (cached); a bad one raises DataError naming it.
    """
    cfg = _cfg(data_cfg)
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no images to read (the image list is empty)")
    infos, out_channels = _infos_or_raise(paths, cfg)
    kinds = {i.kind for i in infos}
    kind_codes = np.array([0 if i.kind == "tf" else 1 for i in infos], np.int32)
    load = _loader(cfg, kinds, out_channels)
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices((paths, kind_codes))
        fn = load
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, kind_codes, labels))

        def fn(path, kind, label):
            return load(path, kind), label
    if shuffle_paths:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return ds.map(fn, num_parallel_calls=_parallel(cfg), deterministic=True), out_channels


def image_batches(paths, data_cfg: dict, batch_size: int):
    """Batches of ``batch_size`` images (the last one shorter), as ``image_dataset(...).batch(...)``
    gives them. Returns ``(dataset, channels)``.

    When every image is decoded in the graph and already has ``data.imshape`` and the output
    channels (nothing to convert but the values), each batch of paths is decoded by one map call
    instead of one per image: half the CPU time per image for small images, the same values.
    """
    cfg = _cfg(data_cfg)
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no images to read (the image list is empty)")
    infos, out_channels = _infos_or_raise(paths, cfg)
    height, width = (int(v) for v in cfg["imshape"])
    if any(i.kind != "tf" or (i.height, i.width, i.channels) != (height, width, out_channels) for i in infos):
        images, channels = image_dataset(paths, data_cfg)
        return one_pass(images.batch(batch_size)), channels
    shape = [height, width, out_channels]

    def decode_batch(batch):
        images = tf.map_fn(lambda path: tf.ensure_shape(_decode_tf(path), shape), batch,
                           fn_output_signature=tf.TensorSpec(shape, tf.float32))
        return tf.clip_by_value(images, 0.0, 1.0)

    batches = tf.data.Dataset.from_tensor_slices(paths).batch(batch_size)
    return one_pass(batches.map(decode_batch, num_parallel_calls=_parallel(cfg), deterministic=True)), out_channels


def batch_seeds(seed: int):
    """An endless stream of [2] int64 seeds: reproducible from ``seed``, new on every iteration."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def make_dataset(paths, data_cfg: dict, *, batch_size: int, labels=None, shuffle: bool = False,
                 seed: int = 0, repeat: bool = False, augmenter=None, views: int = 1,
                 drop_remainder: bool = False, cache=None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of batches from image files.

    Yields ``images`` (``views=1``), a tuple of ``views`` augmented batches (``views>=2``), or
    ``(x, labels)`` when ``labels`` (array of shape ``(len(paths), classes)``, -1 = unknown) is
    given. Images are float32 ``(B, H, W, C)``: in [0, 1] before ``data.normalize`` is applied.

    ``cache``: None uses ``data.cache``; ``False`` disables; ``"memory"`` or a file path caches
    the decoded images. ``shuffle`` reshuffles every epoch, reproducibly from ``seed``.
    ``augmenter``: an :class:`~patchcfg.data.augment.Augmenter` (or any ``(batch, seed) -> batch``
    callable); with ``views >= 2`` and no augmenter the views are identical copies.
    Bad files raise DataError; filter them with :func:`check_images` first.
    """
    cfg = _cfg(data_cfg)
    paths = [str(p) for p in paths]
    cache = cfg.get("cache") if cache is None else (cache or None)
    if labels is not None:
        labels = np.asarray(labels, np.float32)
        if labels.ndim == 1:
            labels = labels[:, None]
        if len(labels) != len(paths):
            raise ValueError(f"{len(labels)} label rows for {len(paths)} paths")
    ds, channels = image_dataset(paths, cfg, labels=labels, shuffle_paths=shuffle and not cache, seed=seed)
    if cache:
        ds = ds.cache("" if cache == "memory" else str(cache))
        if shuffle:
            ds = ds.shuffle(min(len(paths), 50_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return finish_batches(ds, cfg, channels, augmenter=augmenter, views=views, seed=seed,
                          with_labels=labels is not None)


def finish_batches(ds, cfg, channels, *, augmenter, views, seed, with_labels):
    """Batched images (or (images, labels)) -> augmented views -> normalized -> prefetched."""
    normalize = _normalizer(_cfg(cfg), channels)

    def post(x):
        return normalize(x) if normalize is not None else x

    aug_seed = getattr(augmenter, "seed", None)

    def run(batch, batch_seed):
        images, labels = batch if with_labels else (batch, None)
        if aug_seed is not None:
            batch_seed = tf.random.experimental.stateless_fold_in(batch_seed, aug_seed)
        if views >= 2:
            if augmenter is not None:
                seeds = tf.random.experimental.stateless_split(batch_seed, views)
                x = tuple(post(augmenter(images, seeds[i])) for i in range(views))
            else:
                x = tuple(post(images) for _ in range(views))
        else:
            x = post(augmenter(images, batch_seed) if augmenter is not None else images)
        return (x, labels) if with_labels else x

    ds = tf.data.Dataset.zip(ds, batch_seeds(seed))
    ds = ds.map(run, num_parallel_calls=_parallel(_cfg(cfg)), deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_images(paths, data_cfg: dict, batch_size: int = 256) -> np.ndarray:
    """All images decoded into one float32 array (N, H, W, C) in [0, 1] (no augmentation)."""
    ds, _ = image_dataset(paths, data_cfg)
    chunks = [b.numpy() for b in one_pass(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))]
    return np.concatenate(chunks, 0)

