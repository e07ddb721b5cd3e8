"""Scene readers (nerf_synthetic, LLFF) and the procedural toy scene."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.data import nerf, toy_scene
from fdm.errors import UserError
from fdm.nerf import rays, render

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "data")
LEGO = os.path.join(DATA, "nerf_synthetic", "lego")
FERN = os.path.join(DATA, "nerf_llff_data", "fern")
needs_lego = pytest.mark.skipif(not os.path.isdir(LEGO), reason=f"shared lego not at {LEGO}")
needs_fern = pytest.mark.skipif(not os.path.isdir(FERN), reason=f"shared fern not at {FERN}")


def _assert_poses(c2w, atol=1e-5):
    r = c2w[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(np.swapaxes(r, 1, 2) @ r, np.broadcast_to(np.eye(3), r.shape),
                               atol=atol)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=atol)
    np.testing.assert_allclose(c2w[:, 3], np.tile([0, 0, 0, 1], (len(c2w), 1)))


@functools.lru_cache(maxsize=None)
def _lego(split, size=64, white=True):
    return nerf.load_nerf_synthetic(LEGO, split, size, white)


@needs_lego
def test_lego_reader_shapes_focal_and_white_background():
    with open(os.path.join(LEGO, "transforms_train.json")) as f:
        angle = json.load(f)["camera_angle_x"]
    for split in ("train", "val"):
        d = _lego(split)
        assert d.images.shape == (100, 64, 64, 3) and d.images.dtype == np.float32
        g = d.geometry
        assert (g.height, g.width, g.near, g.far, g.white_background) == (64, 64, 2.0, 6.0, True)
        np.testing.assert_allclose(d.geometry.focal, 32.0 / np.tan(angle / 2), rtol=1e-6)
        assert 0.0 <= d.images.min() and d.images.max() <= 1.0
        np.testing.assert_allclose(d.images[:, 0, 0], 1.0, atol=1e-3)  # background corner
        _assert_poses(d.c2w)
        # Blender cameras sit on a sphere of radius ~4 looking at the origin (-z axis).
        centres, forward = d.c2w[:, :3, 3], -d.c2w[:, :3, 2]
        off_axis = centres - np.sum(centres * forward, -1, keepdims=True) * forward
        assert np.abs(np.linalg.norm(centres, axis=-1) - 4.03).max() < 0.05
        assert np.linalg.norm(off_axis, axis=-1).max() < 1e-3


def _alpha(split, size):
    """Silhouettes [N, size, size] from the white and black composites (1 - (white - black))."""
    return 1.0 - (_lego(split, size, True).images - _lego(split, size, False).images).mean(-1)


def _visual_hull(c2w, focal, alpha, grid):
    """Grid points [G, 3] seen inside every silhouette, projected with a hand pinhole."""
    size = alpha.shape[-1]
    keep = np.ones(len(grid), bool)
    for m, a in zip(c2w, alpha):
        cam = (grid - m[:3, 3]) @ m[:3, :3]                    # R^T (p - t)
        u = focal * cam[:, 0] / -cam[:, 2] + size / 2
        v = -focal * cam[:, 1] / -cam[:, 2] + size / 2
        ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        iu, iv = (np.clip(w.astype(int), 0, size - 1) for w in (u, v))
        keep &= ok & (a[iv, iu] > 0.5)
    return keep


@needs_lego
def test_lego_conventions_visual_hull_predicts_val_silhouettes():
    """Carve a hull from the train masks with a hand pinhole; render it with fdm.nerf
    from the val cameras: its silhouettes must match the val masks (IoU)."""
    train, val = _lego("train", 64), _lego("val", 64)
    n, half = 48, 1.3
    axis = -half + (np.arange(n) + 0.5) * (2 * half / n)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    hull = _visual_hull(train.c2w, train.geometry.focal, _alpha("train", 64),
                        grid).reshape(n, n, n)
    assert 0.01 < hull.mean() < 0.5
    hull = jnp.asarray(hull)

    def field_fn(x, d):
        idx = jnp.clip(jnp.floor((x + half) * (n / (2 * half))).astype(jnp.int32), 0, n - 1)
        occ = hull[idx[..., 0], idx[..., 1], idx[..., 2]] & jnp.all(jnp.abs(x) < half, -1)
        return jnp.ones_like(x), jnp.where(occ, 50.0, 0.0)

    r = rays.generate_rays(jnp.asarray(val.c2w[:12]), 64, 64, val.geometry.focal)
    acc = jax.jit(lambda r: render.render_rays(field_fn, r, 2.0, 6.0, 96).acc)(r)
    pred, true = np.asarray(acc) > 0.5, _alpha("val", 64)[:12] > 0.5
    iou = lambda p: (p & true).sum() / (p | true).sum()
    assert iou(pred) > 0.8, iou(pred)            # measured 0.88
    assert iou(pred[:, ::-1]) < 0.7              # an up/down flip would fail (0.53)


@needs_fern
def test_fern_reader_conversion_and_split():
    d = nerf.load_llff(FERN, "train", 48)
    assert d.images.shape == (17, 48, 64, 3)
    assert d.geometry.forward_facing and not d.geometry.white_background
    assert d.names[0] == "image001.png" and "image008.png" not in d.names
    _assert_poses(d.c2w)
    hwf = np.load(os.path.join(FERN, "poses_bounds.npy"))[0, :15].reshape(3, 5)[:, 4]
    np.testing.assert_allclose(d.geometry.focal, hwf[2] * 64 / hwf[1], rtol=1e-6)
    # Recentred forward-facing rig: average back axis ~ +z, cameras look down -z.
    assert np.all(d.c2w[:, 2, 2] > 0.95)
    np.testing.assert_allclose(d.c2w[:, :3, 3].mean(0), 0.0, atol=1e-5)
    assert 0 < d.geometry.near < d.geometry.far
    all_views = nerf.load_llff(FERN, "all", 24)
    assert len(all_views.images) == 17
    with pytest.raises(UserError, match="llff_holdout='position'"):
        nerf.load_llff(FERN, "test", 24)


@needs_fern
def test_fern_position_holdout_is_the_documented_fallback():
    test = nerf.load_llff(FERN, "test", 16, holdout="position")
    train = nerf.load_llff(FERN, "train", 16, holdout="position")
    assert test.names == ("image001.png", "image010.png", "image019.png")
    assert len(train.names) == 14 and not set(train.names) & set(test.names)


def test_llff_to_opengl_columns():
    # LLFF columns [down, right, back]; identity-like camera expressed in LLFF.
    llff = np.array([[0.0, 1.0, 0.0, 5.0], [-1.0, 0.0, 0.0, 6.0], [0.0, 0.0, 1.0, 7.0]])
    gl = nerf.llff_to_opengl(llff)
    np.testing.assert_allclose(gl, [[1, 0, 0, 5], [0, 1, 0, 6], [0, 0, 1, 7]])


def test_llff_split_uses_original_indices():
    full = [f"image{i:03d}.png" for i in range(20)]
    idx = nerf.original_indices(full)
    assert list(np.flatnonzero(nerf.llff_split_mask(idx, "test", 8))) == [0, 8, 16]
    partial = [n for i, n in enumerate(full) if i % 8]
    assert not nerf.llff_split_mask(nerf.original_indices(partial), "val", 8).any()
    other = nerf.original_indices(["b.png", "c.png", "x.png"])
    np.testing.assert_array_equal(other, [0, 1, 2])
    assert nerf.llff_split_mask(idx, "train", 0).all()
    np.testing.assert_array_equal(nerf.holdout_indices(partial, "position"), np.arange(17))
    with pytest.raises(UserError, match="llff_holdout"):
        nerf.holdout_indices(partial, "random")


def test_missing_data_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="transforms_train.json"):
        nerf.load_nerf_synthetic(str(tmp_path), "train")
    with pytest.raises(UserError, match="poses_bounds.npy"):
        nerf.load_llff(str(tmp_path))
    pose = np.concatenate([np.eye(3), np.zeros((3, 1)), [[8.0], [8.0], [10.0]]], 1)
    np.save(tmp_path / "poses_bounds.npy", np.tile(np.append(pose.ravel(), [1.0, 5.0]), (2, 1)))
    with pytest.raises(UserError, match="images_8"):
        nerf.load_llff(str(tmp_path))
    with pytest.raises(UserError, match="aspect"):
        nerf.output_size((64, 64), 378, 504)
    assert nerf.output_size(48, 378, 504) == (48, 64)


@functools.lru_cache(maxsize=None)
def _toy(split, seed=0):
    return toy_scene.load_toy_scene(split, seed=seed, image_size=24, num_train=12, num_val=6)


def test_toy_scene_deterministic_with_poses_on_upper_hemisphere():
    train = _toy("train")
    again = toy_scene.load_toy_scene("train", seed=0, image_size=24, num_train=12, num_val=6)
    np.testing.assert_array_equal(train.images, again.images)
    np.testing.assert_array_equal(train.c2w, again.c2w)
    assert not np.allclose(train.c2w[:6], _toy("val").c2w)
    assert not np.allclose(train.c2w, _toy("train", seed=1).c2w)
    assert train.images.shape == (12, 24, 24, 3) and train.geometry.white_background
    centres = train.c2w[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-5)
    assert np.all(centres[:, 2] > 4.0 * np.sin(np.deg2rad(9.9)))
    np.testing.assert_allclose(train.c2w[:, :3, 2], centres / 4.0, atol=1e-5)  # looks at 0
    _assert_poses(train.c2w)
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert 0.05 < np.mean(np.any(train.images < 0.99, -1)) < 0.9      # object and background


def test_toy_scene_volume_render_reproduces_analytic_images():
    """The analytic ray-cast images vs fdm.nerf rendering the same scene as a density field."""
    val = _toy("val")
    g = val.geometry
    r = rays.generate_rays(jnp.asarray(val.c2w), g.height, g.width, g.focal)
    out = jax.jit(lambda r: render.render_rays(toy_scene.toy_field, r, g.near, g.far, 256,
                                               white_background=True))(r)
    err = np.abs(np.asarray(out.rgb) - val.images).max(-1)
    assert err.mean() < 0.01 and np.mean(err > 0.1) < 0.02, (err.mean(), np.mean(err > 0.1))


def test_toy_scene_bad_split():
    with pytest.raises(UserError, match="split"):
        toy_scene.load_toy_scene("test")


def test_scene_datasets_are_registered_for_the_command_line(tmp_path):
    """`fdm.data.load_split_arrays` serves the scenes (what `experiments.main` reads)."""
    from configs import toy_scene
    from fdm.data import load_split_arrays
    from fdm.errors import UserError
    c = toy_scene.get_config("tiny")
    train, held_out = load_split_arrays(c, "train"), load_split_arrays(c, "eval")
    assert train["image"].shape == (c.data.num_train, 16, 16, 3)
    assert train["image"].dtype == np.uint8 and train["c2w"].shape == (c.data.num_train, 4, 4)
    assert held_out["image"].shape[0] == c.data.num_val
    assert not np.allclose(train["c2w"][:len(held_out["c2w"])], held_out["c2w"])
    c.data.dataset, c.data.data_dir = "nerf_synthetic", str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="nowhere"):
        load_split_arrays(c, "train")
