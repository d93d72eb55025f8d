"""The context encoder's pieces: hidden rectangles, filling them, the loss, the decoder's shapes."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from patchcfg.pretrain.context_encoder import build_decoder, hidden_rectangles, hide  # noqa: E402


def images(n=6, size=(16, 16), seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, *size, 3)), tf.float32)


def bounds(mask):
    rows, cols = np.nonzero(mask[..., 0])
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_rectangles_have_the_asked_size_and_place():
    masks = hidden_rectangles(6, 16, 16, [1, 2], 0.5, "random").numpy()
    assert masks.shape == (6, 16, 16, 1) and set(np.unique(masks)) == {0.0, 1.0}
    places = set()
    for mask in masks:
        top, bottom, left, right = bounds(mask)
        assert (bottom - top, right - left) == (8, 8) and mask.sum() == 64  # one solid 8x8 rectangle
        places.add((top, left))
    assert len(places) > 1  # random positions
    again = hidden_rectangles(6, 16, 16, [1, 2], 0.5, "random").numpy()
    np.testing.assert_array_equal(masks, again)  # seeded
    assert not np.array_equal(masks, hidden_rectangles(6, 16, 16, [1, 3], 0.5, "random").numpy())
    for mask in hidden_rectangles(6, 16, 16, [1, 2], 0.5, "center").numpy():
        assert bounds(mask) == (4, 12, 4, 12)
    for mask in hidden_rectangles(6, 16, 16, [5, 6], [0.25, 0.5], "random").numpy():
        top, bottom, left, right = bounds(mask)
        assert 4 <= bottom - top <= 8 and 4 <= right - left <= 8


def test_hidden_pixels_get_the_mean_colour_of_the_visible_ones():
    x = images(n=2)
    masks = hidden_rectangles(2, 16, 16, [0, 1], 0.5, "random")
    filled = hide(x, masks).numpy()
    m = masks.numpy()[..., 0].astype(bool)
    for i in range(2):
        np.testing.assert_array_equal(filled[i][~m[i]], x.numpy()[i][~m[i]])
        np.testing.assert_allclose(filled[i][m[i]], np.broadcast_to(x.numpy()[i][~m[i]].mean(0), (64, 3)), atol=1e-6)


@pytest.mark.parametrize("imshape", [(16, 16), (32, 32), (20, 28)])
def test_decoder_gives_back_an_image_of_the_input_shape(imshape):
    decoder = build_decoder(12, imshape, 3, filters=16, synchronized=False)
    assert decoder(tf.zeros((2, 12))).shape == (2, *imshape, 3)
