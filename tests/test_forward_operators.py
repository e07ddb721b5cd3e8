"""Forward models (fdm.forward): shapes, numpy references, adjoints and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fdm.errors import UserError
from fdm.forward import CropOperator, LinearOperator, ObservationTuple, VIEW_KEYS, all_rows
from fdm.forward import linear_gaussian as lg


def _crop_case(batch=3, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    op = CropOperator(window=(8, 8), signal_size=(16, 16))
    signal = rng.standard_normal((batch, 16, 16, channels)).astype(np.float32)
    phi = rng.integers(0, 9, (batch, 2)).astype(np.int32)
    return op, signal, phi


def test_crop_equals_numpy_slicing():
    op, signal, phi = _crop_case()
    out = np.asarray(op.apply(jnp.asarray(signal), jnp.asarray(phi)))
    assert out.shape == (3, 8, 8, 2)
    for b, (r, c) in enumerate(phi):
        np.testing.assert_array_equal(out[b], signal[b, r:r + 8, c:c + 8])


def test_crop_paste_is_its_adjoint_and_masks_the_window():
    op, signal, phi = _crop_case(seed=1)
    obs = np.random.default_rng(2).standard_normal((3, 8, 8, 2)).astype(np.float32)
    canvas, mask = op.paste(jnp.asarray(obs), jnp.asarray(phi))
    assert canvas.shape == (3, 16, 16, 2) and mask.shape == (3, 16, 16, 1)
    lhs = np.sum(np.asarray(op.apply(jnp.asarray(signal), jnp.asarray(phi)), np.float64) * obs)
    rhs = np.sum(signal.astype(np.float64) * np.asarray(canvas))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask).sum(axis=(1, 2, 3)), 64)
    r, c = phi[0]
    np.testing.assert_array_equal(np.asarray(canvas)[0, r:r + 8, c:c + 8], obs[0])


def test_crop_gradients_match_finite_differences_and_paste():
    op, signal, phi = _crop_case(batch=2, channels=1, seed=3)
    phi = jnp.asarray(phi)
    check_grads(lambda s: op.apply(s, phi), (jnp.asarray(signal),), order=1, modes=("rev",),
                eps=1e-2)
    cotangent = jnp.ones((2, 8, 8, 1))
    _, vjp = jax.vjp(lambda s: op.apply(s, phi), jnp.asarray(signal))
    np.testing.assert_array_equal(vjp(cotangent)[0], op.paste(cotangent, phi)[0])


def test_linear_operator_selects_rows_and_its_vjp_is_the_adjoint():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((64, 8)).astype(np.float32)
    op = LinearOperator(jnp.asarray(matrix))
    w = rng.standard_normal((5, 8)).astype(np.float32)
    rows = lg.random_patch_rows(rng, 5, 2)
    out = np.asarray(op.apply(jnp.asarray(w), jnp.asarray(rows)))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, np.take_along_axis(w @ matrix.T, rows, axis=1), rtol=1e-5,
                               atol=1e-5)
    full = op.apply(jnp.asarray(w), all_rows(5, 64))
    np.testing.assert_allclose(full, op.generate(jnp.asarray(w)), rtol=1e-5, atol=1e-5)
    obs = rng.standard_normal((5, 4)).astype(np.float32)
    _, vjp = jax.vjp(lambda s: op.apply(s, jnp.asarray(rows)), jnp.asarray(w))
    canvas, mask = op.paste(jnp.asarray(obs), jnp.asarray(rows))
    np.testing.assert_allclose(vjp(jnp.asarray(obs))[0], np.asarray(canvas) @ matrix,
                               rtol=1e-5, atol=1e-5)
    assert canvas.shape == mask.shape == (5, 64)
    np.testing.assert_array_equal(np.asarray(mask).sum(axis=1), 4)
    check_grads(lambda s: op.apply(s, jnp.asarray(rows)), (jnp.asarray(w),), order=1,
                modes=("rev",), eps=1e-2)


def test_patch_rows_are_the_patch_pixels_in_row_major_order():
    np.testing.assert_array_equal(lg.patch_rows(np.array([[0, 0], [6, 5]]), 2),
                                  [[0, 1, 8, 9], [53, 54, 61, 62]])
    rows = lg.random_patch_rows(np.random.default_rng(0), 1000, 2)
    assert rows.min() >= 0 and rows.max() <= 63 and rows.dtype == np.int32


def test_generator_is_fixed_scaled_and_every_patch_is_well_conditioned():
    a = lg.generator_matrix()
    np.testing.assert_array_equal(a, lg.generator_matrix())
    assert a.shape == (64, 8) and np.linalg.matrix_rank(a) == 8
    np.testing.assert_allclose(np.sqrt(np.mean(np.sum(a**2, axis=1))), lg.PIXEL_STD)
    offsets = np.stack(np.meshgrid(np.arange(7), np.arange(7)), -1).reshape(-1, 2)
    smallest = [np.linalg.svd(a[rows], compute_uv=False)[-1]
                for rows in lg.patch_rows(offsets, 2)]
    assert min(smallest) > 0.05                      # the module doc's conditioning


def test_observation_tuple_from_batch_names_a_missing_key():
    batch = {k: np.zeros((2, 3)) for k in VIEW_KEYS}
    views = ObservationTuple.from_batch(batch)
    assert views.novel.phi.shape == (2, 3)
    del batch["novel_phi"]
    with pytest.raises(UserError, match="novel_phi"):
        ObservationTuple.from_batch(batch)
