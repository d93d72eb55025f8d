"""Reading and checking image files: formats, value scaling, the validation pass.

Importing this module does not import TensorFlow; checking a PNG, JPEG or GIF does (lazily), so
that the file is decoded by the same decoder as in the pipeline.

Formats
-------
- PNG, JPEG, GIF: decoded inside the ``tf.data`` graph (``tf.io.decode_image``); 8-bit values
  are divided by 255, 16-bit PNGs by 65535; a GIF gives its first frame.
- BMP, TIFF (``.tif``/``.tiff``) and ``.npy``: read in Python (Pillow, ``tifffile``, NumPy) through
  ``tf.numpy_function``. TIFFs may have any number of channels (planar or interleaved; the Y and X
  axes are found from the file's axis labels, every other axis becomes channels); ``.npy`` arrays
  are ``(H, W)`` or ``(H, W, C)``, channels last.
- Values: unsigned integers are divided by their type's maximum (uint8: 255, uint16: 65535),
  signed integers by theirs and clipped at 0, booleans give 0/1, floating-point data are taken as
  they are (scale them to [0, 1] beforehand). NaN or infinite values make a file bad.

The validation pass (:func:`probe`) opens and fully decodes every file once, in a thread pool, with
the decoder that the pipeline will use, so the graph only ever sees files known to decode. Results
are cached per (path, modification time, size) for the life of the process.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

TF_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
PY_SUFFIXES = (".bmp", ".tif", ".tiff", ".npy")
SUFFIXES = TF_SUFFIXES + PY_SUFFIXES


@dataclass(frozen=True)
class ImageInfo:
    """What the validation pass learnt about a good file."""

    kind: str  # "tf": decoded in the graph; "py": read through tf.numpy_function
    height: int
    width: int
    channels: int


class BadImage(Exception):
    """A file that cannot be used; the message is the reason."""


def to_unit(array: np.ndarray) -> np.ndarray:
    """Scale an array to float32 following the value rules in the module docstring."""
    dtype = array.dtype
    if dtype == np.bool_:
        out = array.astype(np.float32)
    elif np.issubdtype(dtype, np.unsignedinteger):
        out = array.astype(np.float32) / np.float32(np.iinfo(dtype).max)
    elif np.issubdtype(dtype, np.signedinteger):
        out = np.clip(array.astype(np.float32) / np.float32(np.iinfo(dtype).max), 0.0, 1.0)
    elif np.issubdtype(dtype, np.floating):
        out = array.astype(np.float32)
    else:
        raise BadImage(f"unsupported data type {dtype}")
    return out


def _hwc(array: np.ndarray, axes: str | None = None) -> np.ndarray:
    """An image array as (H, W, C)."""
    if array.ndim == 2:
        return array[:, :, None]
    if axes and "Y" in axes and "X" in axes and len(axes) == array.ndim:
        moved = np.moveaxis(array, [axes.index("Y"), axes.index("X")], [0, 1])
        return moved.reshape(moved.shape[0], moved.shape[1], -1)
    if array.ndim == 3:
        return array
    raise BadImage(f"expected a 2-D or 3-D image array, got shape {array.shape}")


def _read_tiff(path: str) -> np.ndarray:
    """A TIFF through tifffile; compressions it needs ``imagecodecs`` for fall back to Pillow."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
    except ValueError as error:
        if "imagecodecs" not in str(error):
            raise
        try:
            return _read_pil(path)
        except Exception:  # noqa: BLE001 - report tifffile's reason, it names the fix
            raise BadImage(f"cannot be decoded ({error}; `pip install imagecodecs` adds it)") from None
    return _hwc(array, axes or None)


def _read_pil(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)[:, :, None]
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("I", "F"):
            return np.asarray(im)[:, :, None]
        elif im.mode not in ("L", "LA", "RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
        return _hwc(np.asarray(im))


def read_raw(path: str) -> np.ndarray:
    """The file's pixels as stored, (H, W, C), any dtype (Python-read formats)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    if suffix == ".npy":
        return _hwc(np.load(path, allow_pickle=False))
    return _read_pil(path)


def read_unit(path: str | bytes) -> np.ndarray:
    """A Python-read image as float32 (H, W, C) in [0, 1]; used inside ``tf.numpy_function``."""
    if isinstance(path, bytes):
        path = path.decode("utf-8")
    return np.ascontiguousarray(to_unit(read_raw(path)))


def _check_file(path: str) -> str:
    """The file's lower-case suffix, once it is an existing, non-empty file of a supported format."""
    if not os.path.exists(path):
        raise BadImage("file not found")
    if os.path.isdir(path):
        raise BadImage("is a folder, not an image")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise BadImage(f"unsupported format '{suffix}' (supported: {', '.join(SUFFIXES)})")
    if os.path.getsize(path) == 0:
        raise BadImage("empty file")
    return suffix


def _probe_one(path: str) -> ImageInfo:
    suffix = _check_file(path)
    try:
        if suffix in TF_SUFFIXES:
            import tensorflow as tf

            with open(path, "rb") as handle:
                contents = handle.read()
            image = tf.io.decode_image(contents, channels=0, expand_animations=False)
            height, width, channels = (int(v) for v in image.shape)
            return ImageInfo("tf", height, width, channels)
        array = read_raw(path)
    except BadImage:
        raise
    except MemoryError:
        raise
    except Exception as error:  # every decoder's own error type: corrupt, truncated, unsupported
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadImage(f"cannot be decoded ({message[:200]})") from None
    if array.size == 0 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImage(f"empty image (shape {array.shape})")
    to_unit(array[:1, :1])  # dtype check
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise BadImage("contains NaN or infinite values")
    return ImageInfo("py", int(array.shape[0]), int(array.shape[1]), int(array.shape[2]))


_CACHE: dict[tuple, ImageInfo | str] = {}


def _key(path: str) -> tuple:
    try:
        stat = os.stat(path)
        return (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (os.path.abspath(path), None, None)


def file_keys(paths) -> list[tuple]:
    """(absolute path, modification time in ns, size) of each file, as the check's cache keys them
    (None, None for a file that cannot be read)."""
    return [_key(str(path)) for path in paths]


def files_digest(keys: list[tuple]) -> str:
    """A SHA-256 of files' :func:`file_keys` in order: what a file computed from the images
    (embed's features, DetCon's segments) is recomputed for, also when an image is replaced in
    place under the same name."""
    import hashlib

    digest = hashlib.sha256()
    for key in keys:
        digest.update(f"{key}\n".encode())
    return digest.hexdigest()


#: PNG/JPEG/GIF files decoded together in one ``tf.data`` pass by :func:`_probe_decoded_together`
TOGETHER = 4096


def _probe_decoded_together(paths: list[str]) -> list[ImageInfo] | None:
    """The infos of PNG/JPEG/GIF files, each fully decoded as :func:`_probe_one` decodes it, but in
    one parallel ``tf.data`` pass (a tenth of the CPU of one eager decode per file); None when any
    of them fails, so that the files are checked one by one and the bad ones named."""
    import tensorflow as tf

    from patchcfg.data.passes import one_pass

    def shape(path):
        return tf.shape(tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False))

    with tf.init_scope():  # eagerly, also when called while a tf.function is being traced
        if not tf.executing_eagerly():
            return None
        shapes = one_pass(tf.data.Dataset.from_tensor_slices(paths).map(shape, num_parallel_calls=tf.data.AUTOTUNE))
        try:
            found = [ImageInfo("tf", int(h), int(w), int(c)) for h, w, c in shapes.as_numpy_iterator()]
        except (tf.errors.OpError, ValueError):
            return None
    return found if len(found) == len(paths) else None


def probe(paths, workers: int | None = None) -> list[ImageInfo | str]:
    """For each path: its :class:`ImageInfo`, or the reason (str) it cannot be used.

    PNG, JPEG and GIF files are decoded together in parallel ``tf.data`` passes; any other file,
    or every file of a pass where one failed, is decoded in a thread pool, one by one. Results are
    cached per (path, mtime, size).
    """
    paths = [str(p) for p in paths]
    keys = [_key(p) for p in paths]
    todo = sorted({i for i, k in enumerate(keys) if k[1] is None or k not in _CACHE},
                  key=lambda i: paths[i])
    found: dict[int, ImageInfo | str] = {}

    def keep(index, result):
        found[index] = result
        if keys[index][1] is not None:
            _CACHE[keys[index]] = result

    together = []
    for index in todo:
        try:
            if _check_file(paths[index]) in TF_SUFFIXES:
                together.append(index)
        except BadImage as error:
            keep(index, str(error))
    for start in range(0, len(together) if len(together) >= 16 else 0, TOGETHER):
        part = together[start:start + TOGETHER]
        infos = _probe_decoded_together([paths[i] for i in part])
        for index, info in zip(part, infos or (), strict=False):
            keep(index, info)
    todo = [i for i in todo if i not in found]

    def run(index):
        try:
            return index, _probe_one(paths[index])
        except BadImage as error:
            return index, str(error)

    if todo:
        workers = workers or min(16, (os.cpu_count() or 1) * 2)
        if len(todo) < 16:
            results = map(run, todo)
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            results = pool.map(run, todo, chunksize=max(1, len(todo) // (workers * 8)))
        for index, result in results:
            keep(index, result)
        if len(todo) >= 16:
            pool.shutdown()
    return [found[i] if i in found else _CACHE[keys[i]] for i in range(len(paths))]


def clear_cache() -> None:
    _CACHE.clear()
