"""Crops: an image cut into N x N cells in order, cells reduced per image, cell files and labels."""

import numpy as np
import pytest
from PIL import Image

from patchcfg.config import with_defaults
from patchcfg.data.crops import cell_files, cut, expand, load_cells, reduce


def _quadrants(path, size=16):
    """A 2x2 image of quadrants: top-left 10, top-right 60, bottom-left 120, bottom-right 240 (gray)."""
    pixels = np.zeros((2 * size, 2 * size), np.uint8)
    for (r, c), value in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [10, 60, 120, 240], strict=True):
        pixels[r * size:(r + 1) * size, c * size:(c + 1) * size] = value
    Image.fromarray(pixels).convert("RGB").save(path)
    return path


def test_an_image_of_four_quadrants_yields_its_four_cells_in_order(tmp_path):
    data = with_defaults("data", {"imshape": [16, 16], "crops": 2})
    cells = load_cells([_quadrants(tmp_path / "q.png"), _quadrants(tmp_path / "r.png")], data)
    assert cells.shape == (8, 16, 16, 3)
    np.testing.assert_allclose(cells.reshape(8, -1).mean(1) * 255, [10, 60, 120, 240] * 2, atol=0.5)
    assert np.ptp(cells.reshape(8, -1), axis=1).max() < 1e-6  # each cell is one quadrant, nothing else


def test_cut_is_row_by_row_and_reduce_is_per_image():
    images = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(np.float32)
    cells = cut(images, 3)
    assert cells.shape == (18, 2, 2, 1)
    np.testing.assert_array_equal(cells[1, :, :, 0], images[0, 0:2, 2:4, 0])  # row 0, column 1
    np.testing.assert_array_equal(cells[3, :, :, 0], images[0, 2:4, 0:2, 0])  # row 1, column 0
    np.testing.assert_array_equal(cells[9, :, :, 0], images[1, 0:2, 0:2, 0])  # the second image's first
    p = np.array([[0.1, 0.9], [0.3, 0.5], [0.2, 0.4], [0.6, 0.0]])
    np.testing.assert_allclose(reduce(p, 2, "mean"), [[0.3, 0.45]])
    np.testing.assert_allclose(reduce(p, 2, "max"), [[0.6, 0.9]])


def test_cell_files_hold_the_cells_and_carry_their_images_labels(tmp_path):
    data = with_defaults("data", {"imshape": [16, 16], "crops": 2})
    images = [str(_quadrants(tmp_path / "a.png")), str(_quadrants(tmp_path / "b.png"))]
    files = cell_files(images, data, tmp_path / "cells")
    assert [len(f) for f in files] == [4, 4] and len({c for f in files for c in f}) == 8
    np.testing.assert_allclose([np.load(f).mean() * 255 for f in files[1]], [10, 60, 120, 240], atol=0.5)
    stamp = [(tmp_path / "cells" / f).stat().st_mtime_ns for f in files[0]]
    assert cell_files(images[:1], data, tmp_path / "cells") == files[:1]  # written once
    assert [(tmp_path / "cells" / f).stat().st_mtime_ns for f in files[0]] == stamp
    paths, labels = expand(np.array([[1, -1], [0, 1]], np.float32), files)
    assert paths == files[0] + files[1]
    np.testing.assert_array_equal(labels, [[1, -1]] * 4 + [[0, 1]] * 4)


@pytest.mark.parametrize("crops", [0, 1.5])
def test_crops_must_be_a_whole_number_from_one(crops):
    from patchcfg.config import resolve_config
    from patchcfg.errors import ConfigError

    with pytest.raises(ConfigError, match="data.crops"):
        resolve_config({"name": "c", "data": {"crops": crops}})


def test_a_cell_label_table_replaces_its_cells_known_labels(tmp_path):
    from patchcfg.data.crops import read_cell_labels
    from patchcfg.errors import UserError

    (tmp_path / "tiles").mkdir()
    table = tmp_path / "cells.csv"
    table.write_text("filepath,cell,water,road\ntiles/a.png,3,1,\ntiles/b.png,0,,0\n")
    overrides = read_cell_labels(str(table), ["water", "road"], 2)
    images = [str(tmp_path / "tiles" / "a.png"), str(tmp_path / "tiles" / "b.png")]
    files = [[f"a{i}" for i in range(4)], [f"b{i}" for i in range(4)]]
    _, labels = expand(np.array([[0, -1], [1, 1]], np.float32), files, overrides, images)
    np.testing.assert_array_equal(labels, [[0, -1], [0, -1], [0, -1], [1, -1],    # a: cell 3 has water
                                           [1, 0], [1, 1], [1, 1], [1, 1]])        # b: cell 0 has no road
    table.write_text("filepath,cell,water\ntiles/a.png,4,1\n")
    with pytest.raises(UserError, match=r"cells.csv:2: cell '4' is not a whole number from 0 to 3"):
        read_cell_labels(str(table), ["water", "road"], 2)
    table.write_text("filepath,cell,sand\ntiles/a.png,1,1\n")
    with pytest.raises(UserError, match=r"cells.csv:1: sand not among the classes \(water, road\)"):
        read_cell_labels(str(table), ["water", "road"], 2)
    table.write_text("filepath,cell,water\ntiles/a.png,1,yes\n")
    with pytest.raises(UserError, match=r"cells.csv:2: water is 'yes'; write 1, 0 or leave it blank"):
        read_cell_labels(str(table), ["water", "road"], 2)
