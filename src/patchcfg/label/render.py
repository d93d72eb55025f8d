"""Images for the page: every format the readers know, rendered by the server to an 8-bit PNG.

- 8-bit images are shown as they are; 16-bit, signed, float and ``.npy`` data are stretched
  (``label.display.stretch``: the 2nd to 98th percentile per channel, min to max, or none).
- Three or more channels: the bands of ``label.display.bands`` as red, green, blue; fewer:
  the first channel as grayscale.
- ``thumb`` fits in 192 px, ``full`` in 640 px; small images are enlarged without smoothing, so
  their pixels stay sharp.
- An unreadable file gives a gray placeholder; the reason goes in the ``X-Patchcfg-Image-Error``
  header of the reply.

Results are cached per (path, modification time, size, view) in memory.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict

import numpy as np

from patchcfg.data.readers import read_raw, to_unit

SIZES = {"thumb": 192, "full": 640}


class RenderError(Exception):
    """Why a file cannot be shown."""


def to_display(array: np.ndarray, bands, stretch: str) -> np.ndarray:
    """(H, W, C) pixels of any dtype -> (H, W) or (H, W, 3) uint8."""
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise RenderError(f"not an image array (shape {array.shape})")
    channels = array.shape[2]
    if channels >= 3:
        if max(bands) >= channels:
            raise RenderError(f"label.display.bands {list(bands)} needs {max(bands) + 1} channels; "
                              f"this image has {channels}")
        picked = array[:, :, list(bands)]
    else:
        picked = array[:, :, :1]
    if picked.dtype == np.uint8:
        out = picked
    else:
        unit = to_unit(picked) if picked.dtype != np.float64 else picked.astype(np.float32)
        if not np.isfinite(unit).all():
            unit = np.nan_to_num(unit, nan=0.0, posinf=0.0, neginf=0.0)
        if stretch != "none":
            q = (2, 98) if stretch == "percentile" else (0, 100)
            low, high = np.percentile(unit.reshape(-1, unit.shape[2]), q, axis=0)
            span = np.where(high > low, high - low, 1.0)
            unit = (unit - low) / span
        out = (np.clip(unit, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _png(pixels: np.ndarray, limit: int) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    scale = limit / max(image.size)
    if scale < 1:
        image.thumbnail((limit, limit), Image.LANCZOS)
    elif scale >= 2:
        factor = int(scale)
        image = image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def placeholder(limit: int, text: str = "") -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (limit, limit), (60, 60, 60))
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, limit, limit), fill=(110, 40, 40), width=3)
    draw.line((0, limit, limit, 0), fill=(110, 40, 40), width=3)
    if text:
        draw.text((6, 6), text[:40], fill=(230, 230, 230))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Renderer:
    """Renders rows' images, with an in-memory cache of recent results."""

    def __init__(self, display: dict, capacity: int = 4096):
        self.bands = tuple(display["bands"])
        self.stretch = display["stretch"]
        self.capacity = capacity
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def render(self, path: str, size: str) -> tuple[bytes, str | None]:
        """(PNG bytes, error or None) for the image at ``path`` (from the table, never from a client)."""
        limit = SIZES[size]
        try:
            stat = os.stat(path)
            key = (path, stat.st_mtime_ns, stat.st_size, size)
        except OSError as error:
            return placeholder(limit, "file not found"), f"{path}: {error.strerror or 'cannot be read'}"
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            if os.path.isdir(path):
                raise RenderError("is a folder, not an image")
            result = (_png(to_display(read_raw(path), self.bands, self.stretch), limit), None)
        except MemoryError:
            raise
        except Exception as error:  # every decoder's own error: corrupt, truncated, unsupported
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            result = (placeholder(limit, "cannot be shown"), f"{os.path.basename(path)}: {reason[:200]}")
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return result
