"""Forward softmax splatting (fdm.forward.splatting; Niklaus & Liu 2020, brief D7) against a
slow numpy bilinear splat written from the definition, integer flows against exact
np.roll shifts, zero flow as the identity, the importance metric deciding collisions,
and finite gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fdm.forward.splatting import softmax_splat, summation_splat

EPS = 1e-7


def _numpy_splat(image, flow, importance):
    """The definition, one source pixel and one corner at a time (float64): each pixel
    adds exp(Z) w I and exp(Z) w at the four grid points around (x + F_x, y + F_y),
    w = (1 - |dx|)(1 - |dy|); out = sum / weight where weight > EPS (exp(Z - max Z)
    per image), else 0."""
    image, flow = np.asarray(image, np.float64), np.asarray(flow, np.float64)
    b, h, w, c = image.shape
    num, den = np.zeros((b, h, w, c)), np.zeros((b, h, w))
    for n in range(b):
        scale = np.exp(importance[n] - importance[n].max())
        for y in range(h):
            for x in range(w):
                tx, ty = x + flow[n, y, x, 0], y + flow[n, y, x, 1]
                for qy in (int(np.floor(ty)), int(np.floor(ty)) + 1):
                    for qx in (int(np.floor(tx)), int(np.floor(tx)) + 1):
                        weight = max(0.0, 1 - abs(tx - qx)) * max(0.0, 1 - abs(ty - qy))
                        if 0 <= qx < w and 0 <= qy < h and weight > 0:
                            num[n, qy, qx] += scale[y, x] * weight * image[n, y, x]
                            den[n, qy, qx] += scale[y, x] * weight
    out = np.zeros_like(num)
    covered = den > EPS
    out[covered] = num[covered] / den[covered][:, None]
    return out


def _random(seed, shape=(2, 7, 9, 3)):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, shape).astype(np.float32)
    flow = rng.uniform(-2.5, 2.5, shape[:-1] + (2,)).astype(np.float32)
    return rng, image, flow


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_numpy_bilinear_loop_for_fractional_flows(seed):
    rng, image, flow = _random(seed)
    zero = np.zeros(image.shape[:-1], np.float32)
    np.testing.assert_allclose(softmax_splat(jnp.asarray(image), jnp.asarray(flow)),
                               _numpy_splat(image, flow, zero), atol=1e-5)
    z = rng.standard_normal(image.shape[:-1]).astype(np.float32)
    out = jax.jit(softmax_splat)(jnp.asarray(image), jnp.asarray(flow), jnp.asarray(z))
    np.testing.assert_allclose(out, _numpy_splat(image, flow, z), atol=1e-5)


def test_summation_splat_conserves_the_mass_that_lands_inside():
    """A pixel landing at t along an axis of n pixels keeps the fraction
    clip(min(t + 1, n - t), 0, 1) of its mass on that axis (all of it within [0, n - 1])."""
    _, image, flow = _random(3)
    ys, xs = np.mgrid[0:7, 0:9]
    kept = (np.clip(np.minimum(xs + flow[..., 0] + 1, 9 - xs - flow[..., 0]), 0, 1)
            * np.clip(np.minimum(ys + flow[..., 1] + 1, 7 - ys - flow[..., 1]), 0, 1))
    total = np.asarray(summation_splat(jnp.asarray(image), jnp.asarray(flow))).sum((1, 2))
    np.testing.assert_allclose(total, (image * kept[..., None]).sum((1, 2)), atol=1e-4)
    assert 0 < kept.mean() < 1                                  # some mass leaves the frame


@pytest.mark.parametrize("dx,dy", [(2, 0), (-2, 0), (0, 2), (0, -2), (1, -3), (3, 2)])
def test_integer_flow_is_an_exact_shift(dx, dy):
    rng = np.random.default_rng(4)
    image = rng.uniform(-1, 1, (2, 12, 10, 3)).astype(np.float32)
    flow = np.broadcast_to(np.array([dx, dy], np.float32), (2, 12, 10, 2))
    out = np.asarray(softmax_splat(jnp.asarray(image), jnp.asarray(flow)))
    rolled = np.roll(image, (dy, dx), axis=(1, 2))
    m = max(abs(dx), abs(dy))
    np.testing.assert_allclose(out[:, m:12 - m, m:10 - m], rolled[:, m:12 - m, m:10 - m],
                               atol=1e-6)
    ys, xs = np.mgrid[0:12, 0:10]                           # q whose source q - d is outside
    uncovered = (ys - dy < 0) | (ys - dy >= 12) | (xs - dx < 0) | (xs - dx >= 10)
    assert np.all(out[:, uncovered] == 0.0)
    np.testing.assert_allclose(out[:, ~uncovered], rolled[:, ~uncovered], atol=1e-6)


def test_zero_flow_is_the_identity():
    rng, image, _ = _random(5)
    zero = jnp.zeros(image.shape[:-1] + (2,))
    np.testing.assert_allclose(softmax_splat(jnp.asarray(image), zero), image, atol=1e-7)
    z = jnp.asarray(3.0 * rng.standard_normal(image.shape[:-1]), jnp.float32)
    np.testing.assert_allclose(softmax_splat(jnp.asarray(image), zero, z), image, atol=1e-6)


def test_the_importance_metric_decides_a_collision():
    """Two pixels land on one target: average splatting averages them, a large Z on one
    makes softmax splatting keep that one."""
    image = np.zeros((1, 3, 3, 1), np.float32)
    image[0, 1, 0, 0], image[0, 1, 1, 0] = 1.0, -1.0
    flow = np.zeros((1, 3, 3, 2), np.float32)
    flow[0, 1, 0] = (1.0, 0.0)                              # (1, 0) lands on (1, 1)
    out = softmax_splat(jnp.asarray(image), jnp.asarray(flow))
    assert float(out[0, 1, 1, 0]) == pytest.approx(0.0, abs=1e-7)
    assert float(out[0, 1, 0, 0]) == 0.0                     # nothing lands there
    z = np.zeros((1, 3, 3), np.float32)
    z[0, 1, 0] = 20.0
    out = softmax_splat(jnp.asarray(image), jnp.asarray(flow), jnp.asarray(z))
    assert float(out[0, 1, 1, 0]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("integer", [False, True])
def test_gradients_are_finite(integer):
    _, image, flow = _random(6, (1, 6, 6, 2))
    if integer:
        flow = np.round(flow)                               # on the bilinear kernel's kinks
    target = np.random.default_rng(7).uniform(-1, 1, image.shape).astype(np.float32)

    def loss(img, f, z):
        return jnp.sum((softmax_splat(img, f, z) - target) ** 2)

    z = jnp.zeros(image.shape[:-1])
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.asarray(image), jnp.asarray(flow), z)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    assert float(jnp.abs(grads[1]).sum()) > 0
    if not integer:
        check_grads(lambda f: loss(jnp.asarray(image), f, z), (jnp.asarray(flow),), order=1,
                    modes=("rev",), eps=1e-3, atol=2e-2, rtol=2e-2)
