"""DetCon's pieces: segments, grid cells, region pooling, the region InfoNCE, masks that follow views."""

from __future__ import annotations

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
