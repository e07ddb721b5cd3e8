"""fdm.viz: uint8 conversion, grids, PNG/npz writing, mask colouring and overlays."""
import os

import numpy as np
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
