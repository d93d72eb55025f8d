"""DetCon's pieces: segments, grid cells, region pooling, the region InfoNCE, masks that follow views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from patchcfg.pretrain.detcon import (  # noqa: E402
    felzenszwalb_segments,
    grid_segments,
    pool_regions,
)


def test_felzenszwalb_keeps_the_largest_segments_numbered_by_size():
    image = np.zeros((16, 16, 3), np.float32)
    image[:, 8:] = [1.0, 0.0, 0.0]      # 128 pixels
    image[:4, :4] = [0.0, 0.0, 1.0]     # 16 pixels; the rest (112 pixels) black
    segments = felzenszwalb_segments(image[None], 2, scale=1.0, sigma=0.0, min_size=1)[0]
    assert segments.dtype == np.int8
    assert (segments[:, 8:] == 0).all() and (segments[4:, :8] == 1).all()
    assert (segments[:4, :4] == -1).all()  # the third-largest segment is not kept


def test_grid_cells_are_numbered_row_by_row():
    cells = grid_segments(3, (16, 16), 4)
    assert cells.shape == (3, 16, 16)
    assert cells[0, 0, 0] == 0 and cells[0, 0, 15] == 3 and cells[0, 15, 0] == 12 and cells[0, 15, 15] == 15
    assert all((cells[0] == k).sum() == 16 for k in range(16))


def test_pooling_averages_the_features_under_each_mask():
    maps = tf.reshape(tf.range(32, dtype=tf.float32), (1, 4, 4, 2))
    masks = np.zeros((1, 8, 8, 2), np.float32)
    masks[0, :, :4, 0] = 1.0  # left half
    pooled, area = pool_regions(maps, tf.constant(masks))
    np.testing.assert_allclose(pooled.numpy()[0, 0], maps.numpy()[0, :, :2].reshape(-1, 2).mean(0))
    np.testing.assert_allclose(area.numpy(), [[8.0, 0.0]])
    np.testing.assert_allclose(pooled.numpy()[0, 1], [0.0, 0.0])  # an empty mask pools to zero


def test_masks_take_each_views_flip(tmp_path):
    """With grid masks and a certain left-right flip, each view's masks are the flipped grid."""
    from PIL import Image

    from patchcfg.config.schema import fill_defaults
    from patchcfg.pretrain.detcon import DetCon

    paths = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), i * 20, np.uint8)).save(path)
        paths.append(str(path))
    config = fill_defaults({"seed": 1, "data": {"imshape": [16, 16]}, "augmentation": {"Fliplr": 1.0},
                            "pretrain": {"method": "detcon", "masks": "grid", "grid": 2, "batch_size": 4,
                                         "steps_per_epoch": 2}})
    method = DetCon(config, paths)
    (view1, masks1), (view2, masks2) = next(iter(method.dataset(0)))
    assert masks1.shape == (4, 16, 16, 4)
    flipped = tf.one_hot(grid_segments(4, (16, 16), 2)[:, :, ::-1], 4).numpy()
    np.testing.assert_array_equal(masks1.numpy(), flipped)
    np.testing.assert_array_equal(masks2.numpy(), flipped)


def blocky_images(folder, count: int = 8, side: int = 16) -> list[str]:
    """PNGs of a few flat rectangles each, so that every image has its own Felzenszwalb segments."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = np.full((side, side, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(3):
            top, left = rng.integers(0, side - 4, 2)
            pixels[top:top + 6, left:left + 5] = rng.integers(0, 256, 3)
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def felzenszwalb_config(**pretrain):
    from patchcfg.config.schema import fill_defaults

    return fill_defaults({"seed": 1, "data": {"imshape": [16, 16]}, "augmentation": {"Fliplr": 0.5},
                          "pretrain": {"method": "detcon", "masks": "felzenszwalb", "num_masks": 3,
                                       "felzenszwalb": {"scale": 1.0, "sigma": 0.0, "min_size": 4},
                                       "batch_size": 4, "steps_per_epoch": 2, **pretrain}})


def test_streamed_segments_feed_the_same_masks_as_segments_held_in_memory(tmp_path):
    """The segment file is read batch by batch; were a row read wrongly, DetCon would contrast
    regions of other images than the ones it was shown."""
    from patchcfg.data.loading import load_images
    from patchcfg.pretrain.detcon import DetCon

    paths = blocky_images(tmp_path)
    config = felzenszwalb_config()
    streamed = DetCon(config, paths, workdir=tmp_path / "work")
    segments = streamed.segments()
    assert isinstance(segments, np.memmap) and segments.dtype == np.int8  # on disk, not in memory
    fh = streamed.params.felzenszwalb
    held = felzenszwalb_segments(load_images(paths, streamed.data_cfg), 3, fh.scale, fh.sigma, fh.min_size)
    np.testing.assert_array_equal(segments, held)
    assert len({segments[i].tobytes() for i in range(len(paths))}) > 1  # images differ: rows are told apart
    in_memory = DetCon(config, paths, workdir=tmp_path / "unused")
    in_memory._segments = held  # the segments as they were held before
    for streamed_batch, held_batch in zip(streamed.dataset(0), in_memory.dataset(0), strict=True):
        for (_, masks), (_, held_masks) in zip(streamed_batch, held_batch, strict=True):
            np.testing.assert_array_equal(masks.numpy(), held_masks.numpy())


def test_a_resumed_run_reuses_the_segment_file_and_a_changed_setting_recomputes_it(tmp_path, monkeypatch):
    """Felzenszwalb over a million images takes hours: a resumed run must not segment again, and
    segments of other settings must not be trained on."""
    import patchcfg.pretrain.detcon as detcon

    paths = blocky_images(tmp_path)
    work = tmp_path / "work"
    first = detcon.DetCon(felzenszwalb_config(), paths, workdir=work).segments()
    calls = []
    segment = detcon.felzenszwalb_segments
    monkeypatch.setattr(detcon, "felzenszwalb_segments", lambda *a, **k: calls.append(1) or segment(*a, **k))
    again = detcon.DetCon(felzenszwalb_config(), paths, workdir=work).segments()
    assert calls == [] and again.filename == first.filename
    np.testing.assert_array_equal(again, first)

    changed = detcon.DetCon(felzenszwalb_config(num_masks=2), paths, workdir=work).segments()
    assert calls and changed.filename != first.filename
    assert changed.max() == 1 and first.max() == 2
    assert [p.name for p in work.iterdir()] == [Path(changed.filename).name]  # the stale file is gone


def test_an_image_replaced_in_place_is_segmented_again(tmp_path, monkeypatch):
    """Same file name, new picture: its old segments must not mask the new image."""
    import os

    from PIL import Image

    import patchcfg.pretrain.detcon as detcon

    paths = blocky_images(tmp_path)
    work = tmp_path / "work"
    first = detcon.DetCon(felzenszwalb_config(), paths, workdir=work).segments()
    Image.open(paths[1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths[1])
    os.utime(paths[1], ns=(os.stat(paths[0]).st_atime_ns, os.stat(paths[0]).st_mtime_ns + 10**9))
    again = detcon.DetCon(felzenszwalb_config(), paths, workdir=work).segments()
    fresh = detcon.DetCon(felzenszwalb_config(), paths, workdir=tmp_path / "fresh").segments()
    assert again.filename != first.filename and not np.array_equal(again[1], first[1])
    np.testing.assert_array_equal(again, fresh)


def test_an_interrupted_segment_file_is_never_read_and_is_continued(tmp_path):
    """A run killed while segmenting leaves no file that looks whole; the next run continues after
    the blocks already written instead of starting over."""
    from patchcfg.pretrain.detcon import stored_segments

    rows = np.arange(6 * 2 * 2, dtype=np.int8).reshape(6, 2, 2)
    asked = []

    def failing(start):
        asked.append(start)
        yield rows[start:start + 2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stored_segments(tmp_path, {"images": 6}, 6, failing)
    assert not list(tmp_path.glob("*.npy"))

    def blocks(start):
        asked.append(start)
        for at in range(start, 6, 2):
            yield rows[at:at + 2]

    np.testing.assert_array_equal(stored_segments(tmp_path, {"images": 6}, 6, blocks), rows)
    assert asked == [0, 2]
