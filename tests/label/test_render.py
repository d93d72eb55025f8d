"""Images for the page: 8-bit as is, 16-bit and float stretched, bands chosen, errors explained."""

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from patchcfg.label.render import Renderer, RenderError, to_display

DISPLAY = {"bands": [0, 1, 2], "stretch": "percentile"}


def decode(data):
    return np.asarray(Image.open(BytesIO(data)))


def test_8bit_gray_and_rgb_are_shown_as_they_are():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    assert np.array_equal(to_display(gray, (0, 1, 2), "percentile"), gray[:, :, 0])
    rgba = np.random.default_rng(0).integers(0, 255, (4, 4, 4)).astype(np.uint8)
    assert np.array_equal(to_display(rgba, (0, 1, 2), "percentile"), rgba[:, :, :3])


def test_16bit_tiff_is_stretched_and_bands_are_picked(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    dark = (rng.random((32, 32, 5)) * 900 + 100).astype(np.uint16)  # 16-bit, far below 65535
    tifffile.imwrite(tmp_path / "five.tif", dark, photometric="minisblack", planarconfig="contig")
    renderer = Renderer({"bands": [4, 2, 0], "stretch": "percentile"})
    data, error = renderer.render(str(tmp_path / "five.tif"), "full")
    shown = decode(data)
    assert error is None and shown.dtype == np.uint8 and shown.shape[2] == 3 and shown.shape[0] >= 320
    assert shown.max() == 255 and shown.min() == 0  # stretched, not a black picture
    plain = to_display(dark, (4, 2, 0), "none")
    assert plain.max() < 5  # what the reader's scaling alone would show


def test_npy_float_minmax_and_none():
    values = np.linspace(0.2, 0.4, 64, dtype=np.float32).reshape(8, 8)[:, :, None]
    assert to_display(values, (0, 1, 2), "minmax").max() == 255
    assert to_display(values, (0, 1, 2), "none").max() == round(0.4 * 255)


def test_bands_beyond_the_channels_and_bad_files_explain(tmp_path):
    with pytest.raises(RenderError, match="needs 6 channels"):
        to_display(np.zeros((4, 4, 3), np.uint8), (0, 1, 5), "none")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    renderer = Renderer(DISPLAY)
    data, error = renderer.render(str(tmp_path / "bad.png"), "thumb")
    assert "bad.png" in error and decode(data).shape[:2] == (192, 192)
    data, error = renderer.render(str(tmp_path / "missing.png"), "thumb")
    assert "No such file" in error or "cannot" in error


def test_cache_follows_the_file(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    renderer = Renderer(DISPLAY)
    first, _ = renderer.render(str(path), "thumb")
    assert renderer.render(str(path), "thumb")[0] is first
    import os
    import time

    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert decode(renderer.render(str(path), "thumb")[0]).max() == 200
