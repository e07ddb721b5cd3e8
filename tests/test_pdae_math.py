"""fdm.diffusion.pdae against independent references (seed 002 brief, sec. 5): float64
numpy closed forms from the betas for PDAE's coefficients and Eq. 3.11, the Eq. 3.7
mean shift, hand-built stage maps and n = 4 segment masks, torch for SimSiam's loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.diffusion import (DiffusionSchedule, eps_loss, predict_x0_from_eps, q_posterior,
                           q_sample)
from fdm.diffusion.pdae import (eps_shift_coef, guided_eps, guided_x0, masked_z,
                                negative_cosine, pdae_loss, pdae_weight, pdae_weight_from_snr,
                                sample_stages, segment_of_dims, simsiam_loss, snr,
                                stage_of_timestep, x0_shift_coef)
from fdm.errors import UserError

T = 1000
BETAS = np.linspace(1e-4, 0.02, T, dtype=np.float64)      # the DMs' linear schedule
T_EDGE = np.array([0, 1, 2, 17, 500, 998, 999])


def numpy_coefficients(betas):
    """The brief's closed forms, 0-indexed with abar_{-1} = 1: (snr, lambda, lambda', s, w)."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    ratio = abar / (1.0 - abar)
    lam = ratio ** 0.1 / (1.0 + ratio)
    lam_x0 = ratio ** 1.1 / (1.0 + ratio)
    s = -np.sqrt(alphas) * (1.0 - abar_prev) / np.sqrt(1.0 - abar)
    w = (1.0 - abar_prev) / np.sqrt(abar_prev)
    return dict(abar=abar, snr=ratio, lam=lam, lam_x0=lam_x0, s=s, w=w)


REF = numpy_coefficients(BETAS)


def schedule64():
    """The linear schedule stored in float64 (call inside enable_x64)."""
    return DiffusionSchedule.from_betas(BETAS, dtype=jnp.float64)


def test_coefficients_match_the_closed_forms_in_float64():
    with jax.enable_x64(True):
        sched, t = schedule64(), jnp.arange(T)
        np.testing.assert_allclose(snr(sched, t), REF["snr"], rtol=1e-12)
        np.testing.assert_allclose(pdae_weight(sched, t), REF["lam"], rtol=1e-12)
        np.testing.assert_allclose(pdae_weight_from_snr(REF["snr"]), REF["lam"], rtol=1e-14)
        np.testing.assert_allclose(snr(sched, t) * pdae_weight(sched, t), REF["lam_x0"],
                                   rtol=1e-12)
        np.testing.assert_allclose(eps_shift_coef(sched, t), REF["s"], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(x0_shift_coef(sched, t), REF["w"], rtol=1e-12, atol=1e-300)
        assert float(eps_shift_coef(sched, 0)) == 0.0 and float(x0_shift_coef(sched, 0)) == 0.0


def test_float32_coefficients_keep_relative_precision_at_small_t():
    """The float32 schedule (computed in float64, then cast) gives s, w, lambda to ~1e-6
    even at t = 1, where 1 - abar_{t-1} = 1e-4 would lose three digits in float32."""
    sched, t = DiffusionSchedule.create("linear", T), jnp.arange(1, T)
    for fn, key in ((eps_shift_coef, "s"), (x0_shift_coef, "w"), (pdae_weight, "lam")):
        np.testing.assert_allclose(fn(sched, t), REF[key][1:], rtol=2e-6)


def eq_3_11_numpy(x0, eps, eps_theta, g, t):
    """The thesis's x0 form, lambda'_t mean (x0 - (u_theta + w_t g))^2, from the betas
    alone: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, u_theta = (x_t - sqrt(1 - abar)
    eps_theta) / sqrt(abar). Float64 numpy, [B]."""
    bshape = (-1,) + (1,) * (x0.ndim - 1)
    abar = REF["abar"][t].reshape(bshape)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps
    u_theta = (x_t - np.sqrt(1.0 - abar) * eps_theta) / np.sqrt(abar)
    x0_hat = u_theta + REF["w"][t].reshape(bshape) * g
    return REF["lam_x0"][t] * np.mean((x0 - x0_hat) ** 2, axis=(1, 2, 3))


def test_eps_form_equals_eq_3_11_in_float64():
    rng = np.random.default_rng(0)
    t = np.concatenate([T_EDGE, rng.integers(0, T, 9)])
    x0, eps, eps_theta, g = (rng.standard_normal((t.size, 4, 4, 3)) for _ in range(4))
    with jax.enable_x64(True):
        sched = schedule64()
        ours = pdae_loss(sched, jnp.asarray(eps), jnp.asarray(eps_theta), jnp.asarray(g),
                         jnp.asarray(t))
        assert ours.dtype == jnp.float64
        np.testing.assert_allclose(ours, eq_3_11_numpy(x0, eps, eps_theta, g, t), rtol=1e-9)
        # the x0 relation itself: u_theta + w_t g is the x0 implied by eps_theta + s_t g
        x_t = q_sample(sched, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(eps))
        via_eps = predict_x0_from_eps(sched, x_t, jnp.asarray(t),
                                      guided_eps(sched, jnp.asarray(eps_theta), jnp.asarray(g),
                                                 jnp.asarray(t)))
        via_x0 = guided_x0(sched, predict_x0_from_eps(sched, x_t, jnp.asarray(t),
                                                      jnp.asarray(eps_theta)),
                           jnp.asarray(g), jnp.asarray(t))
        np.testing.assert_allclose(via_eps, via_x0, rtol=1e-9, atol=1e-12)


def test_zero_g_is_the_frozen_dms_weighted_loss_bit_for_bit():
    sched = DiffusionSchedule.create("linear", T)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    eps, eps_theta = (jax.random.normal(k, (6, 8, 8, 3)) for k in keys)
    t = jnp.array([0, 1, 250, 500, 998, 999])
    ours = pdae_loss(sched, eps, eps_theta, jnp.zeros_like(eps), t)
    plain = pdae_weight(sched, t) * eps_loss(sched, eps_theta, eps, t)      # L_simple per example
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(plain))


def test_eps_shift_is_the_eq_3_7_mean_shift():
    """mu~(x_t, x0_hat(eps_theta + s_t g)) - mu~(x_t, x0_hat(eps_theta)) = beta~_t g, and
    likewise for u_theta + w_t g: the shift is classifier guidance (Eq. 3.7, s = 1)."""
    rng = np.random.default_rng(1)
    t = np.concatenate([T_EDGE, rng.integers(0, T, 5)])
    x_t, eps_theta, g = (jnp.asarray(rng.standard_normal((t.size, 3, 3, 2))) for _ in range(3))
    beta_tilde = (BETAS * (1.0 - np.append(1.0, REF["abar"][:-1])) / (1.0 - REF["abar"]))[t]
    with jax.enable_x64(True):
        sched, tj = schedule64(), jnp.asarray(t)
        base = predict_x0_from_eps(sched, x_t, tj, eps_theta)
        mean = lambda x0: q_posterior(sched, x0, x_t, tj)[0]  # noqa: E731
        shift_eps = mean(predict_x0_from_eps(sched, x_t, tj, guided_eps(sched, eps_theta, g, tj)))
        shift_x0 = mean(guided_x0(sched, base, g, tj))
        expected = beta_tilde[:, None, None, None] * np.asarray(g)
        np.testing.assert_allclose(shift_eps - mean(base), expected, rtol=1e-7, atol=1e-13)
        np.testing.assert_allclose(shift_x0 - mean(base), expected, rtol=1e-7, atol=1e-13)


def test_bins_stage_map_by_hand():
    t = jnp.array([0, 249, 250, 499, 500, 749, 750, 999])
    np.testing.assert_array_equal(stage_of_timestep(t, T, 4), [1, 1, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(stage_of_timestep(jnp.array([0, 1, 2, 9]), 10, 3),
                                  [1, 1, 1, 3])                  # floor(9 * 3 / 10) + 1
    np.testing.assert_array_equal(stage_of_timestep(t, T, 1), np.ones(8))


def test_sample_stages_bins_and_alg1_literal():
    n, batch = 4, 4000
    t, k = sample_stages(jax.random.PRNGKey(0), batch, T, n)
    np.testing.assert_array_equal(k, (np.asarray(t) * n) // T + 1)
    assert t.min() >= 0 and t.max() <= T - 1 and set(np.unique(k)) == {1, 2, 3, 4}
    t, k = sample_stages(jax.random.PRNGKey(0), batch, T, n, "alg1_literal")
    t, k = np.asarray(t), np.asarray(k)
    base = t - k                                                # Alg. 1's t - 1, 0-indexed
    assert base.min() >= 0 and base.max() <= T - n - 1 and set(np.unique(k)) == {1, 2, 3, 4}
    # k is independent of t: every stage is used in the least and the most noisy half
    assert set(np.unique(k[t < T // 2])) == set(np.unique(k[t >= T // 2])) == {1, 2, 3, 4}
    with pytest.raises(UserError):
        sample_stages(jax.random.PRNGKey(0), 2, T, n, "alg1")
    with pytest.raises(UserError):
        sample_stages(jax.random.PRNGKey(0), 2, 10, 10, "alg1_literal")
    with pytest.raises(UserError):
        stage_of_timestep(t, T, 0)


def test_segment_masks_hand_built_n4():
    """d = 8, n = 4 (2 dims per segment), z = 1..8, stages k = 1..4."""
    z = jnp.tile(jnp.arange(1.0, 9.0), (4, 1))
    k = jnp.array([1, 2, 3, 4])
    np.testing.assert_array_equal(segment_of_dims(8, 4), [1, 1, 2, 2, 3, 3, 4, 4])
    hier = [[1, 2, 0, 0, 0, 0, 0, 0],
            [1, 2, 3, 4, 0, 0, 0, 0],
            [1, 2, 3, 4, 5, 6, 0, 0],
            [1, 2, 3, 4, 5, 6, 7, 8]]
    seq = [[1, 2, 0, 0, 0, 0, 0, 0],
           [0, 0, 3, 4, 0, 0, 0, 0],
           [0, 0, 0, 0, 5, 6, 0, 0],
           [0, 0, 0, 0, 0, 0, 7, 8]]
    np.testing.assert_array_equal(masked_z(z, k, 4), hier)
    np.testing.assert_array_equal(masked_z(z, k, 4, detach_prev=True), hier)
    np.testing.assert_array_equal(masked_z(z, k, 4, "sequential"), seq)
    # gradients: hierarchical reaches z_1..z_k, detach_prev and sequential only z_k
    grad = lambda **kw: jax.grad(lambda z: jnp.sum(masked_z(z, k, 4, **kw)))(z)  # noqa: E731
    np.testing.assert_array_equal(grad(), np.asarray(hier) > 0)
    np.testing.assert_array_equal(grad(detach_prev=True), np.asarray(seq) > 0)
    np.testing.assert_array_equal(grad(mode="sequential"), np.asarray(seq) > 0)
    with pytest.raises(UserError):
        masked_z(z, k, 3)
    with pytest.raises(UserError):
        masked_z(z, k, 4, "sequential", detach_prev=True)
    with pytest.raises(UserError):
        masked_z(z, k, 4, "cumulative")


def test_simsiam_loss_matches_torch_with_detach():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    p1, p2, z1, z2 = (rng.standard_normal((5, 16)).astype(np.float32) for _ in range(4))
    tp1, tp2, tz1, tz2 = (torch.tensor(a, requires_grad=True) for a in (p1, p2, z1, z2))
    ref = -(0.5 * F.cosine_similarity(tp1, tz2.detach(), dim=-1)
            + 0.5 * F.cosine_similarity(tp2, tz1.detach(), dim=-1))
    ref.mean().backward()
    ours = simsiam_loss(*(jnp.asarray(a) for a in (p1, p2, z1, z2)))
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-6, atol=1e-7)
    grads = jax.grad(lambda *a: jnp.mean(simsiam_loss(*a)), argnums=(0, 1, 2, 3))(
        *(jnp.asarray(a) for a in (p1, p2, z1, z2)))
    np.testing.assert_allclose(grads[0], tp1.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[1], tp2.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert tz1.grad is None and tz2.grad is None                 # torch: detached targets
    np.testing.assert_array_equal(grads[2], 0.0)                 # ours: stop-gradient
    np.testing.assert_array_equal(grads[3], 0.0)
    # D is scale invariant and -1 for aligned vectors
    np.testing.assert_allclose(negative_cosine(jnp.asarray(p1), 3.0 * jnp.asarray(p1)), -1.0,
                               rtol=1e-6)
