"""Rays, volume rendering and the NeRF field against hand computations and closed forms."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdm.nerf import cameras, field, rays, render


def test_ray_directions_match_hand_pinhole():
    # W=4, H=2, focal 2, principal point (2, 1); camera turned 90 degrees about z.
    rot_z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    c2w = cameras.make_c2w(jnp.asarray(rot_z), jnp.array([1.0, 2.0, 3.0]))
    r = rays.generate_rays(c2w, 2, 4, 2.0)
    assert r.directions.shape == (2, 4, 3)
    # Pixel (row 0, col 0): camera dir ((0.5-2)/2, -(0.5-1)/2, -1) = (-0.75, 0.25, -1).
    np.testing.assert_allclose(r.directions[0, 0], [-0.25, -0.75, -1.0], atol=1e-6)
    # Pixel (row 1, col 3): ((3.5-2)/2, -(1.5-1)/2, -1) = (0.75, -0.25, -1).
    np.testing.assert_allclose(r.directions[1, 3], [0.25, 0.75, -1.0], atol=1e-6)
    np.testing.assert_allclose(r.origins, np.broadcast_to([1.0, 2.0, 3.0], (2, 4, 3)))
    np.testing.assert_allclose(jnp.linalg.norm(r.viewdirs, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(r.viewdirs[0, 0], np.array([-0.25, -0.75, -1.0]) / 1.2748, rtol=1e-4)


def test_rays_from_pixels_broadcast_and_principal_point():
    c2w = jnp.stack([jnp.eye(4)] * 3)                    # [3, 4, 4]
    xy = jnp.array([[10.0, 20.0], [30.5, 0.0]])           # [2, 2] shared by all cameras
    r = rays.rays_from_pixels(c2w, xy, 50.0, 30.5, 20.0)
    assert r.origins.shape == (3, 2, 3)
    np.testing.assert_allclose(r.directions[1, 0], [(10.0 - 30.5) / 50.0, 0.0, -1.0], atol=1e-7)
    np.testing.assert_allclose(r.directions[2, 1], [0.0, 20.0 / 50.0, -1.0], atol=1e-7)


def test_ndc_rays_map_world_points_onto_ndc_ray():
    r = rays.generate_rays(jnp.eye(4), 4, 6, 5.0)
    ndc = rays.ndc_rays(r, 4, 6, 5.0, near=1.0)
    np.testing.assert_allclose(ndc.origins[..., 2], -1.0, atol=1e-6)   # near plane -> z = -1
    # A world point at depth 3 along each ray maps (NeRF projection) onto the NDC ray.
    p = r.origins + 3.0 * r.directions
    proj = jnp.stack([-2 * 5.0 / 6 * p[..., 0] / p[..., 2], -2 * 5.0 / 4 * p[..., 1] / p[..., 2],
                      1 + 2 * 1.0 / p[..., 2]], -1)
    t = (proj[..., 2] - ndc.origins[..., 2]) / ndc.directions[..., 2]
    np.testing.assert_allclose(ndc.origins + t[..., None] * ndc.directions, proj, atol=1e-5)
    assert np.all((t > 0) & (t < 1))


def _slab_field(sigma, z0, z1, color):
    def field_fn(x, d):
        inside = (x[..., 2] < -z0) & (x[..., 2] > -z1)
        rgb = jnp.broadcast_to(jnp.asarray(color), x.shape)
        return rgb, jnp.where(inside, sigma, 0.0)
    return field_fn


def test_composite_constant_density_slab_closed_form():
    sigma, color = 1.7, [0.2, 0.5, 0.9]
    # Rays from the origin down -z: straight (|d| = 1) and tilted (|d| = 1.25).
    d = jnp.array([[0.0, 0.0, -1.0], [0.75, 0.0, -1.0]])
    r = rays.Rays(jnp.zeros((2, 3)), d, d / jnp.linalg.norm(d, axis=-1, keepdims=True))
    # Bins of width 0.01 from near 1 to far 4; slab between depths 2 and 3 (bin edges).
    out = jax.jit(functools.partial(render.render_rays, _slab_field(sigma, 2.0, 3.0, color),
                                    near=1.0, far=4.0, num_samples=300, white_background=True))(r)
    length = np.array([1.0, 1.25])
    opacity = 1.0 - np.exp(-sigma * length)
    np.testing.assert_allclose(out.acc, opacity, rtol=1e-5)
    np.testing.assert_allclose(out.rgb, opacity[:, None] * np.array(color)
                               + (1 - opacity[:, None]), rtol=1e-5)
    # Transmittance before the slab is 1, after it exp(-sigma L): check per-bin weights.
    t = np.asarray(out.t_edges[0])
    inside_t = np.clip(t, 2.0, 3.0) - 2.0
    expected_w = -np.diff(np.exp(-sigma * length[:, None] * inside_t[None]), axis=-1)
    np.testing.assert_allclose(out.weights, expected_w, atol=1e-6)


def test_composite_constant_density_depth_closed_form():
    sigma, near, far = 0.8, 2.0, 6.0
    r = rays.Rays(jnp.zeros((1, 3)), jnp.array([[0.0, 0.0, -1.0]]), jnp.array([[0.0, 0.0, -1.0]]))
    field_fn = lambda x, d: (jnp.ones_like(x), jnp.full(x.shape[:-1], sigma))
    out = jax.jit(functools.partial(render.render_rays, field_fn, near=near, far=far,
                                    num_samples=2000))(r)
    # E[t] with the missed mass at far: near + (1 - exp(-sigma L)) / sigma.
    expected = near + (1 - np.exp(-sigma * (far - near))) / sigma
    np.testing.assert_allclose(out.depth, [expected], rtol=1e-4)
    np.testing.assert_allclose(out.rgb[0], np.full(3, 1 - np.exp(-sigma * (far - near))), rtol=1e-5)


def test_stratified_bins_deterministic_and_random():
    bins = jax.jit(render.stratified_bins, static_argnums=(3, 4))
    edges, mid = bins(None, 2.0, 6.0, 4, (3,))
    np.testing.assert_allclose(edges[0], [2, 3, 4, 5, 6])
    np.testing.assert_allclose(mid[0], [2.5, 3.5, 4.5, 5.5])
    edges, t = bins(jax.random.PRNGKey(0), 2.0, 6.0, 64, (500,))
    assert np.all((t >= edges[..., :-1]) & (t <= edges[..., 1:]))
    frac = (np.asarray(t) - np.asarray(edges[..., :-1])) / 4.0 * 64
    assert abs(frac.mean() - 0.5) < 0.01 and abs(frac.var() - 1 / 12) < 0.005


def test_sample_pdf_proportional_to_weights():
    edges = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0])
    weights = jnp.array([0.1, 0.0, 0.6, 0.3])
    n = 40000
    sample_pdf = jax.jit(render.sample_pdf, static_argnums=3)
    samples = np.asarray(sample_pdf(jax.random.PRNGKey(1), edges, weights, n, 0.0))
    hist = np.histogram(samples, bins=np.asarray(edges))[0] / n
    np.testing.assert_allclose(hist, weights, atol=0.01)   # 3.5 sigma of a binomial at n=40k
    in_bin = samples[(samples > 2) & (samples < 3)]
    assert abs(in_bin.mean() - 2.5) < 0.01                  # uniform inside a bin
    det = np.asarray(sample_pdf(None, edges, weights, 10, 0.0))
    np.testing.assert_allclose(np.histogram(det, bins=np.asarray(edges))[0], [1, 0, 6, 3])


def _smooth_field(x, d):
    density = 4.0 * jnp.exp(-jnp.sum(x * x, -1) / 0.6)
    rgb = jax.nn.sigmoid(jnp.stack([x[..., 0] * 2, x[..., 1] - x[..., 2], x[..., 2] * 3], -1))
    return rgb, density


def test_pixel_gradient_wrt_c2w_matches_finite_differences():
    with jax.enable_x64(True):
        c2w = cameras.look_at(jnp.array([0.4, -3.5, 1.5]), jnp.array([0.05, 0.1, -0.1]))[:3]

        @jax.jit
        def pixel(m):
            r = rays.rays_from_pixels(m, jnp.array([[3.5, 5.5]]), 10.0, 4.0, 4.0)
            out = render.render_rays(_smooth_field, r, 2.0, 6.0, 96, white_background=True)
            return out.rgb[0] @ jnp.array([1.0, -2.0, 0.5]) + out.depth[0] * 0.1

        grad = np.asarray(jax.jit(jax.grad(pixel))(c2w))
        eps = 1e-6
        basis = np.eye(12).reshape(12, 3, 4)
        fd = np.array([(pixel(c2w + eps * e) - pixel(c2w - eps * e)) / (2 * eps) for e in basis])
        np.testing.assert_allclose(grad, fd.reshape(3, 4), rtol=1e-6, atol=1e-9)
        assert np.abs(grad).max() > 1e-2


def test_render_image_chunks_match_direct_and_hierarchical_runs():
    model = field.NeRFMLP(depth=2, width=32, skips=(1,), pos_max_deg=4, view_max_deg=2)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 3)))
    field_fn = lambda x, d: model.apply(params, x, d)
    c2w = cameras.look_at(jnp.array([0.0, -2.5, 1.0]))
    r = jax.jit(rays.generate_rays, static_argnums=(1, 2))(c2w, 5, 7, 8.0)
    kwargs = dict(near=1.0, far=4.0, num_samples=16, white_background=True)
    image = jax.jit(lambda r: render.render_image(field_fn, r, chunk=8, **kwargs))(r)
    direct = jax.jit(lambda r: render.render_rays(field_fn, r, **kwargs))(r)
    assert image.rgb.shape == (5, 7, 3) and image.depth.shape == (5, 7)
    np.testing.assert_allclose(image.rgb, direct.rgb, atol=1e-6)
    np.testing.assert_allclose(image.depth, direct.depth, atol=1e-5)
    fine = jax.jit(lambda r, k: render.render_image(field_fn, r, chunk=16, num_importance=8,
                                                    rng=k, **kwargs))(r, jax.random.PRNGKey(2))
    assert fine.weights.shape == (5, 7, 24) and np.all(np.isfinite(fine.rgb))
    assert np.all(np.diff(np.asarray(fine.t_edges), axis=-1) >= 0)


def test_positional_encoding_layout():
    x = jnp.array([[0.3, -1.2, 2.0]])
    enc = field.positional_encoding(x, 0, 3)
    assert enc.shape == (1, field.encoding_width(3, 0, 3)) == (1, 21)
    np.testing.assert_allclose(enc[0, :3], x[0])
    np.testing.assert_allclose(enc[0, 3:6], np.sin(x[0]), rtol=1e-6)
    np.testing.assert_allclose(enc[0, 9:12], np.sin(4 * x[0]), rtol=1e-6)
    np.testing.assert_allclose(enc[0, 12:15], np.cos(x[0]), rtol=1e-6)
    assert field.positional_encoding(x, 0, 3, include_identity=False).shape == (1, 18)


def test_nerf_mlp_paper_size_and_ranges():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
    shapes = jax.eval_shape(field.NeRFMLP().init, jax.random.PRNGKey(0), x, x)
    n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes))
    w, pe, de = 256, 63, 27
    expected = ((pe + 1) * w + 6 * (w + 1) * w + (w + pe + 1) * w + (w + 1)
                + (w + 1) * w + (w + de + 1) * 128 + 129 * 3)
    assert n == expected
    model = field.NeRFMLP(depth=3, width=16, skips=(1,))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, x)
    rgb, density = jax.jit(model.apply)(params, x * 3, x)
    assert rgb.shape == (2, 5, 3) and density.shape == (2, 5)
    assert np.all((rgb >= 0) & (rgb <= 1)) and np.all(density >= 0)
    no_view = field.NeRFMLP(depth=2, width=16, use_viewdirs=False, density_activation="relu")
    p2 = jax.jit(no_view.init)(jax.random.PRNGKey(0), x)
    rgb2, density2 = jax.jit(no_view.apply)(p2, x)
    assert rgb2.shape == (2, 5, 3) and np.all(density2 >= 0)


def test_surface_depth_of_a_thin_translucent_layer_is_its_depth():
    """All density in one bin (optical depth 0.4 there, opacity 1 - e^-0.4 = 0.33): the
    surface depth is that bin's midpoint, where render.depth is pulled towards far by
    the missed mass; a ray that hits nothing gets far."""
    edges = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 9), (2, 9))
    mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
    density = jnp.zeros((2, 8)).at[0, 3].set(0.4 / 0.5)                   # bin length 0.5
    r = render.composite_channels(jnp.zeros((2, 8, 1)), density, edges, mids,
                                  jnp.asarray([[0.0, 0.0, -1.0]] * 2))
    # float32: 1 - exp(-0.4) and (depth - (1 - acc) far) / acc each lose a few ulps
    np.testing.assert_allclose(r.acc, [1.0 - np.exp(-0.4), 0.0], rtol=1e-5)
    np.testing.assert_allclose(render.surface_depth(r, 6.0), [3.75, 6.0], rtol=1e-5)
    assert float(r.depth[0]) > 5.0
