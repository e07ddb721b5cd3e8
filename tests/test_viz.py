"""fdm.viz: uint8 conversion, grids, PNG/npz writing, mask colouring and overlays."""
import os

import numpy as np
import pytest
from PIL import Image

from fdm import viz


def test_to_uint8_maps_range_and_clips():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(viz.to_uint8(x), [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(viz.to_uint8(np.array([0.0, 0.5, 1.0]), (0, 1)), [0, 128, 255])


def test_make_grid_shape_and_placement():
    images = np.stack([np.full((4, 5, 3), i + 1, np.uint8) for i in range(7)])
    grid = viz.make_grid(images, ncol=3, pad=1)
    assert grid.shape == (3 * 5 + 1, 3 * 6 + 1, 3) and grid.dtype == np.uint8
    assert (grid[1:5, 1:6] == 1).all() and (grid[6:10, 7:12] == 5).all()
    assert (grid[11:15, 13:18] == 0).all()              # empty 9th cell keeps pad_value
    assert viz.make_grid(images).shape == (3 * 6 + 2, 3 * 7 + 2, 3)   # ncol = ceil(sqrt(7))
    assert viz.make_strip(images[:4], pad=0).shape == (4, 20, 3)


def test_save_png_roundtrip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = str(tmp_path / "a" / "b.png")
    viz.save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    viz.save_png(path, np.ones((6, 7, 1), np.float32))  # float in [0, 1], grey
    assert np.asarray(Image.open(path)).min() == 255
    assert os.listdir(tmp_path / "a") == ["b.png"]      # no temporary files left


def test_save_npz(tmp_path):
    viz.save_npz(str(tmp_path / "x.npz"), images=np.zeros((2, 3)))
    assert np.load(tmp_path / "x.npz")["images"].shape == (2, 3)


def test_colorize_mask_and_overlay_values():
    labels = np.array([[0, 1], [2, 2]])
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    rgb = viz.colorize_mask(labels, palette)
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 255])
    image = np.full((2, 2, 3), 100, np.uint8)
    out = viz.overlay(image, labels, alpha=0.5, palette=palette)
    np.testing.assert_array_equal(out[0, 1], [178, 50, 50])
    np.testing.assert_array_equal(viz.overlay(image, labels, 0.0, palette), image)
    np.testing.assert_array_equal(viz.overlay(image, labels, 1.0, palette), rgb)
    # float images are taken in [-1, 1]
    np.testing.assert_array_equal(viz.overlay(np.zeros((2, 2, 3)), labels, 0.0, palette), 128)


def test_palette_distinct_and_soft_masks():
    pal = viz.default_palette(25)
    assert pal.shape == (25, 3) and len({tuple(c) for c in pal}) == 25
    probs = np.zeros((2, 2, 3))
    probs[..., 1] = 1.0
    np.testing.assert_array_equal(viz.soft_mask_to_rgb(probs, pal[:3]),
                                  np.broadcast_to(pal[1], (2, 2, 3)))
    maps = viz.mask_channels(probs)
    assert maps.shape == (3, 2, 2, 3) and (maps[1] == 255).all() and (maps[0] == 0).all()


def _columns(n=3, k=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for _ in range(k)]


def test_upscale_nearest_and_factor():
    image = np.random.default_rng(1).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    up = viz.upscale_nearest(image, 3)
    assert up.shape == (2, 9, 15, 3) and up.dtype == np.uint8
    np.testing.assert_array_equal(up[1], np.kron(image[1], np.ones((3, 3, 1), np.uint8)))
    np.testing.assert_array_equal(viz.upscale_nearest(image, 1), image)
    assert [viz.upscale_factor(s, 128) for s in (32, 33, 64, 100, 128, 256)] == [4, 4, 2, 2, 1, 1]


def test_titled_columns_shape_and_nearest_tiles():
    n, k, size, pad = 3, 4, 32, 4
    cols = _columns(n, k, size)
    titles = ["image", "truth", "argmax", "soft masks"]
    out = viz.titled_columns(cols, titles, min_tile=128, pad=pad)
    f = 4                                                  # ceil(128 / 32)
    header = viz.title_strip(titles, size * f, pad=pad).shape[0]
    assert 10 < header < 60
    assert out.dtype == np.uint8
    assert out.shape == (header + n * (size * f + pad) + pad, k * (size * f + pad) + pad, 3)
    np.testing.assert_array_equal(out[:header], viz.title_strip(titles, size * f, pad=pad))
    for i, j in [(0, 0), (2, 3), (1, 2)]:                  # example i, column j
        y, x = header + pad + i * (size * f + pad), pad + j * (size * f + pad)
        tile = out[y:y + size * f, x:x + size * f]
        np.testing.assert_array_equal(tile, np.kron(cols[j][i], np.ones((f, f, 1), np.uint8)))
    assert (out[header:header + pad] == 255).all()         # light padding between tiles
    # 33 px tiles also go to an integer factor (4 -> 132 px), non-square tiles by the short side
    assert viz.titled_columns(_columns(1, 2, 33), ["a", "b"], pad=0).shape[1] == 2 * 132
    wide = [np.zeros((1, 16, 40, 3), np.uint8)] * 2
    out = viz.titled_columns(wide, ["a", "b"], pad=0)
    assert out.shape[1] == 2 * 40 * 8 and out.shape[0] - 16 * 8 > 0


def test_titled_columns_header_is_readable_and_titles_differ():
    size, pad, f = 32, 4, 4
    titles = ["image", "truth", "argmax", "soft masks"]
    out = viz.titled_columns(_columns(2, 4, size), titles, pad=pad)
    header = viz.title_strip(titles, size * f, pad=pad).shape[0]
    strip = out[:header]
    background = strip[0, 0]
    np.testing.assert_array_equal(background, [255, 255, 255])
    cells = [strip[:, pad + j * (size * f + pad): (j + 1) * (size * f + pad)] for j in range(4)]
    for cell in cells:
        ink = (cell != background).any(-1)
        assert ink.sum() > 20                              # each title draws pixels
        assert cell.min() < 64                             # dark text on the light strip
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(cells[a], cells[b])
    dark = viz.titled_columns(_columns(1, 2, size), ["x", "y"], pad=pad, background=0)
    assert dark[0, 0].max() == 0 and dark[:header].max() > 191   # light text on a dark strip


def test_titled_columns_keeps_large_tiles():
    cols = _columns(2, 2, 128)
    out = viz.titled_columns(cols, ["a", "b"], min_tile=128, pad=2)
    header = out.shape[0] - (2 * 130 + 2)
    assert out.shape[1] == 2 * 130 + 2 and header > 0
    np.testing.assert_array_equal(out[header + 2:header + 130, 2:130], cols[0][0])
    np.testing.assert_array_equal(out[header + 132:header + 260, 132:260], cols[1][1])
    assert viz.titled_columns(_columns(1, 1, 200), ["a"], pad=0).shape[1] == 200


def test_titled_columns_grey_columns_and_errors():
    grey = np.full((2, 32, 32, 1), 7, np.uint8)
    out = viz.titled_columns([grey, _columns(2, 1)[0]], ["grey", "rgb"], pad=0)
    assert (out[-128:, :128] == 7).all()
    with pytest.raises(ValueError, match="one shape"):
        viz.titled_columns([np.zeros((2, 32, 32, 3), np.uint8),
                            np.zeros((3, 32, 32, 3), np.uint8)], ["a", "b"])
    with pytest.raises(ValueError, match="one shape"):
        viz.titled_columns([np.zeros((2, 32, 32, 3), np.uint8),
                            np.zeros((2, 16, 16, 3), np.uint8)], ["a", "b"])
    with pytest.raises(ValueError, match="one shape"):
        viz.titled_columns([np.zeros((32, 32, 3), np.uint8)], ["a"])
    with pytest.raises(ValueError, match="2 columns but 1 titles"):
        viz.titled_columns(_columns(1, 2), ["a"])
    with pytest.raises(ValueError, match="uint8"):
        viz.titled_columns([np.zeros((1, 8, 8, 3), np.float32)], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        viz.titled_columns([], [])


def test_title_strip_cuts_long_titles():
    strip = viz.title_strip(["a very long title that does not fit", "b"], 40, pad=2)
    assert strip.shape[1] == 2 * 42 + 2
    assert (strip[:, 42:44] == 255).all()                  # nothing spills into the gap
