"""Image loading: every format, value scaling, channels, resizing, bad files, tf.data batches."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from patchcfg.data import readers
from patchcfg.data.images import resolve_image_paths
from patchcfg.data.loading import check_images, image_batches, image_dataset, load_images, make_dataset
from patchcfg.errors import ConfigError, DataError

H, W = 12, 10


def pattern(channels, dtype=np.uint8, scale=1):
    values = (np.arange(H * W * channels) * 7 % 256).reshape(H, W, channels) * scale
    return values.astype(dtype)


def cfg(**kw):
    return {"imshape": [H, W], "channels": 3, **kw}


def load_one(path, **kw):
    return load_images([path], cfg(**kw))[0]


@pytest.fixture(autouse=True)
def _fresh_cache():
    readers.clear_cache()
    yield
    readers.clear_cache()


def test_png_rgb_exact(tmp_path):
    arr = pattern(3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_one(tmp_path / "a.png")
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def test_png_gray_repeated_to_three_channels(tmp_path):
    arr = pattern(1)[..., 0]
    Image.fromarray(arr, "L").save(tmp_path / "g.png")
    out = load_one(tmp_path / "g.png")
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], arr / 255.0, atol=1e-6)


def test_png_16bit_scaled_by_65535(tmp_path):
    arr = np.full((H, W), 65535, np.uint16)
    arr[0, 0] = 32768
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = load_one(tmp_path / "d.png", channels=1)
    assert out.shape == (H, W, 1)
    assert out[1, 1, 0] == pytest.approx(1.0) and out[0, 0, 0] == pytest.approx(32768 / 65535, abs=1e-6)


def test_png_rgba_truncated_to_rgb_and_luminance_for_one_channel(tmp_path):
    arr = pattern(4)
    arr[..., 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(load_one(tmp_path / "a.png"), arr[..., :3] / 255.0, atol=1e-6)
    gray = load_one(tmp_path / "a.png", channels=1)
    expected = (arr[..., :3] / 255.0) @ np.array([0.2989, 0.587, 0.114])
    np.testing.assert_allclose(gray[..., 0], expected, atol=2e-3)


def test_jpeg_gif_bmp(tmp_path):
    flat = np.zeros((H, W, 3), np.uint8)
    flat[: H // 2] = (200, 40, 120)
    flat[H // 2:] = (10, 250, 90)
    Image.fromarray(flat).save(tmp_path / "a.gif")
    Image.fromarray(flat).save(tmp_path / "a.bmp")
    Image.fromarray(np.full((H, W, 3), (200, 40, 120), np.uint8)).save(tmp_path / "a.jpg", quality=100)
    for name in ("a.gif", "a.bmp"):
        out = load_one(tmp_path / name)
        assert out.shape == (H, W, 3), name
        np.testing.assert_allclose(out, flat / 255.0, atol=1e-6, err_msg=name)
    out = load_one(tmp_path / "a.jpg")
    assert out.shape == (H, W, 3)
    np.testing.assert_allclose(out, np.broadcast_to(np.array([200, 40, 120]) / 255.0, out.shape), atol=0.02)


def test_tiff_8bit_16bit_and_many_channels(tmp_path):
    rgb = pattern(3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(load_one(tmp_path / "rgb.tif"), rgb / 255.0, atol=1e-6)

    deep = (pattern(1, np.uint16, 257)[..., 0])
    tifffile.imwrite(tmp_path / "deep.tiff", deep)
    out = load_one(tmp_path / "deep.tiff")
    assert out.shape == (H, W, 3)
    np.testing.assert_allclose(out[..., 2], deep / 65535.0, atol=1e-6)

    bands = pattern(5, np.uint16, 200)
    tifffile.imwrite(tmp_path / "contig.tif", bands, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(bands, -1, 0), photometric="minisblack",
                     planarconfig="separate")
    for name in ("contig.tif", "planar.tif"):
        truncated = load_one(tmp_path / name)
        np.testing.assert_allclose(truncated, bands[..., :3] / 65535.0, atol=1e-6, err_msg=name)
        kept = load_one(tmp_path / name, extra_channels="keep")
        assert kept.shape == (H, W, 5), name
        np.testing.assert_allclose(kept, bands / 65535.0, atol=1e-6, err_msg=name)
        five = load_one(tmp_path / name, channels=5)
        np.testing.assert_allclose(five, kept, atol=0)


def test_compressed_tiff_without_imagecodecs(tmp_path):
    rgb = pattern(3)
    Image.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_allclose(load_one(tmp_path / "lzw.tif"), rgb / 255.0, atol=1e-6)
    deep = np.full((H, W), 60000, np.uint16)
    Image.fromarray(deep).save(tmp_path / "lzw16.tif", compression="tiff_lzw")
    np.testing.assert_allclose(load_one(tmp_path / "lzw16.tif"), 60000 / 65535, atol=1e-6)


def test_npy_arrays(tmp_path):
    floats = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    np.testing.assert_allclose(load_one(tmp_path / "f.npy"), floats, atol=1e-6)
    np.save(tmp_path / "u.npy", pattern(1)[..., 0])
    out = load_one(tmp_path / "u.npy")
    np.testing.assert_allclose(out[..., 1], pattern(1)[..., 0] / 255.0, atol=1e-6)


def test_resize_to_imshape(tmp_path):
    Image.fromarray(pattern(3)).save(tmp_path / "a.png")
    out = load_images([tmp_path / "a.png"], {"imshape": [16, 8]})
    assert out.shape == (1, 16, 8, 3) and 0 <= out.min() and out.max() <= 1


def test_mixed_formats_in_one_dataset(tmp_path):
    Image.fromarray(pattern(3)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", pattern(3))
    out = load_images([tmp_path / "a.png", tmp_path / "b.npy"], cfg())
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_batches_decoded_a_batch_at_a_time_equal_the_images_batched(tmp_path, monkeypatch):
    """Images already at imshape with the output channels (8- or 16-bit) are decoded a batch at a
    time; a list with any other image (resized, an array) goes image by image. Same values."""
    from patchcfg.data import loading

    gray = [tmp_path / f"g{i}.png" for i in range(3)]
    for i, path in enumerate(gray):
        Image.fromarray(np.roll(pattern(1), i)[..., 0], "L").save(path)
    wide = np.full((H, W), 65535, np.uint16)
    wide[0, :3] = [1, 257, 40000]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(pattern(3)).save(tmp_path / "rgb.png")
    Image.fromarray(pattern(3)).resize((W // 2, H // 2)).save(tmp_path / "small.png")
    np.save(tmp_path / "c.npy", pattern(3))
    per_image = []
    monkeypatch.setattr(loading, "image_dataset", lambda *a, **k: per_image.append(1) or image_dataset(*a, **k))
    for paths, channels, batched in (([*gray, tmp_path / "wide.png"], 1, True),
                                     ([tmp_path / "rgb.png", tmp_path / "small.png", tmp_path / "c.npy"], 3, False)):
        images, want_channels = image_dataset(paths, cfg(channels=channels))
        want = [b.numpy() for b in images.batch(2)]
        per_image.clear()
        batches, got_channels = image_batches(paths, cfg(channels=channels), 2)
        assert (not per_image) == batched
        # one pass: no autotuning thread, whose shutdown stalled the end of a pass by up to 2 s
        assert batches.options().autotune.enabled is False
        got = [b.numpy() for b in batches]
        assert got_channels == want_channels and [len(b) for b in got] == [len(b) for b in want]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def truncated_png(path):
    Image.fromarray(pattern(3)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_bad_images_error_names_the_path(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(pattern(3)).save(good)
    broken = tmp_path / "broken.png"
    truncated_png(broken)
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError, match="broken.png: cannot be decoded"):
        check_images([good, broken], "error")
    with pytest.raises(DataError, match="missing.png: file not found"):
        check_images([good, missing], "error")
    with pytest.raises(DataError, match="broken.png"):
        make_dataset([good, broken], cfg(), batch_size=2)


def test_bad_images_skipped_and_counted(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(pattern(3)).save(good)
    broken = tmp_path / "broken.png"
    truncated_png(broken)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("a note")
    np.save(tmp_path / "nan.npy", np.full((H, W), np.nan, np.float32))
    paths = [good, broken, tmp_path / "missing.png", tmp_path / "empty.png", tmp_path / "text.jpg",
             tmp_path / "nan.npy", tmp_path / "notes.txt"]
    kept, skipped = check_images(paths, "skip")
    assert kept == [str(good)]
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in skipped}
    assert set(reasons) == {"broken.png", "missing.png", "empty.png", "text.jpg", "nan.npy", "notes.txt"}
    assert reasons["missing.png"] == "file not found" and reasons["empty.png"] == "empty file"
    assert "NaN" in reasons["nan.npy"] and "unsupported format" in reasons["notes.txt"]
    batches = list(make_dataset(kept, cfg(), batch_size=4))
    assert len(batches) == 1 and batches[0].shape == (1, H, W, 3)


def test_channel_mismatch_is_a_bad_image(tmp_path):
    Image.fromarray(pattern(3)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="has 3 channels, data.channels is 4"):
        check_images([tmp_path / "rgb.png"], "error", data_cfg=cfg(channels=4))


def test_batches_labels_shuffle_views_and_cache(tmp_path):
    paths = []
    for i in range(10):
        Image.fromarray(np.full((H, W, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    labels = np.arange(10, dtype=np.float32)[:, None]
    for cache in (False, "memory", str(tmp_path / "cachefile")):
        ds = make_dataset(paths, cfg(), batch_size=4, labels=labels, shuffle=True, seed=1, cache=cache)
        seen = []
        for images, batch_labels in ds:
            np.testing.assert_allclose(images.numpy()[:, 0, 0, 0] * 255 / 20, batch_labels.numpy()[:, 0], atol=1e-3)
            seen.extend(batch_labels.numpy()[:, 0].tolist())
        assert sorted(seen) == list(range(10)) and seen != list(range(10))
    views = next(iter(make_dataset(paths, cfg(), batch_size=4, views=2)))
    assert isinstance(views, tuple) and len(views) == 2 and views[0].shape == (4, H, W, 3)
    repeated = make_dataset(paths, cfg(), batch_size=4, repeat=True, drop_remainder=True)
    assert [b.shape[0] for b in repeated.take(5)] == [4] * 5


def test_normalize_modes(tmp_path):
    Image.fromarray(pattern(3)).save(tmp_path / "a.png")
    unit = next(iter(make_dataset([tmp_path / "a.png"], cfg(), batch_size=1))).numpy()
    imagenet = next(iter(make_dataset([tmp_path / "a.png"], cfg(normalize="imagenet"), batch_size=1))).numpy()
    np.testing.assert_allclose(imagenet, (unit - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], atol=1e-5)
    per_image = next(iter(make_dataset([tmp_path / "a.png"], cfg(normalize="per_image"), batch_size=1))).numpy()
    assert abs(per_image.mean()) < 1e-4 and per_image.std() == pytest.approx(1.0, abs=1e-3)


def test_resolve_image_paths(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(pattern(3)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "labels.csv").write_text("filepath,cat\nimgs/0.png,1\nimgs/2.png,\n")
    monkeypatch.chdir(tmp_path)
    assert len(resolve_image_paths({"images": "imgs"})) == 3
    assert len(resolve_image_paths({"images": "imgs/*.png"})) == 3
    from_table = resolve_image_paths({"labels": "labels.csv"})
    assert from_table == [str(tmp_path / "imgs" / "0.png"), str(tmp_path / "imgs" / "2.png")]
    with pytest.raises(ConfigError):
        resolve_image_paths({})


def test_validation_pass_is_cached(tmp_path):
    Image.fromarray(pattern(3)).save(tmp_path / "a.png")
    first = readers.probe([tmp_path / "a.png"])
    assert readers._CACHE and readers.probe([tmp_path / "a.png"]) == first
    truncated_png(tmp_path / "a.png")  # changes size and mtime: probed again
    assert isinstance(readers.probe([tmp_path / "a.png"])[0], str)


def test_files_checked_together_give_each_files_info_and_a_bad_one_is_still_named(tmp_path):
    """PNG/JPEG/GIF files are decoded together in one pass; one bad file among them must not hide
    which one it is, nor cost the good ones their infos."""
    readers.clear_cache()
    paths = []
    for i in range(20):
        path = tmp_path / f"{i:02d}.png"
        pixels = pattern(3)[:, :5 + i % 3]
        Image.fromarray(pixels if i % 2 else pixels[..., 0]).save(path)  # RGB and grey, 3 widths
        paths.append(path)
    together = readers.probe(paths)
    readers.clear_cache()
    assert together == [readers._probe_one(str(p)) for p in paths]  # as one by one
    truncated_png(paths[7])
    readers.clear_cache()
    infos = readers.probe(paths)
    assert isinstance(infos[7], str) and "cannot be decoded" in infos[7]
    assert infos[:7] + infos[8:] == together[:7] + together[8:]
