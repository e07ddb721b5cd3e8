"""LMConv (fdm/nn/lmconv.py, seed 004 Alg. 1-2) against independent references: the masks
against a literal transcription of Alg. 2, the layer against a slow per-pixel loop,
against `lax.conv_general_dilated` with all-ones masks, against the weight-masked PixelCNN
convolution under the raster order, and against a torch port of Fig. 5.4 (`F.unfold`);
both implementations ("shifted", "im2col") agree, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.autoregressive import orders
from fdm.nn import lmconv


def alg2_masks(order, height, width, k, dilation, first_layer):
    """Alg. 2 as printed (with the +⌊k/2⌋ fix): walk the order, open the taps whose pixel
    was generated already; [k², H, W]."""
    half = k // 2
    masks = np.zeros((k * k, height * width), np.float32)
    generated = set()
    for p in order:
        r, c = divmod(int(p), width)
        for dr in range(-half, half + 1):
            for dc in range(-half, half + 1):
                if (r + dilation * dr, c + dilation * dc) in generated:
                    masks[(dr + half) * k + dc + half, r * width + c] = 1.0
        generated.add((r, c))
    if not first_layer:
        masks[(k * k) // 2] = 1.0
    return masks.reshape(k * k, height, width)


def loop_conv(x, mask, kernel, dilation):
    """y[b, r, c] = Σ_taps mask · x[b, r + dΔr, c + dΔc] · W (zero outside), pixel by pixel."""
    b, h, w, _ = x.shape
    k = kernel.shape[0]
    half = k // 2
    y = np.zeros((b, h, w, kernel.shape[3]))
    for r in range(h):
        for c in range(w):
            for i in range(k):
                for j in range(k):
                    rr, cc = r + dilation * (i - half), c + dilation * (j - half)
                    if 0 <= rr < h and 0 <= cc < w:
                        y[:, r, c] += mask[i * k + j, r, c] * x[:, rr, cc] @ kernel[i, j]
    return y


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


ORDER_CASES = [("raster", 0), ("s_curve", 3), ("s_curve", 6), ("hilbert", 1), ("hilbert", 5)]


@pytest.mark.parametrize("name,index", ORDER_CASES)
@pytest.mark.parametrize("k,dilation", [(3, 1), (3, 2), (5, 1)])
@pytest.mark.parametrize("first_layer", [True, False])
def test_masks_match_algorithm_2(name, index, k, dilation, first_layer):
    h, w = 6, 8
    order = orders.variant(name, h, w, index)
    ranks = orders.rank_grid(order, h, w)
    np.testing.assert_array_equal(lmconv.order_masks(ranks, k, dilation, first_layer),
                                  alg2_masks(order, h, w, k, dilation, first_layer))


@pytest.mark.parametrize("method", lmconv.METHODS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_lmconv_matches_the_per_pixel_loop(method, dilation):
    order = np.random.default_rng(0).permutation(5 * 7)            # any order
    mask = lmconv.order_masks(orders.rank_grid(order, 5, 7), 3, dilation)
    x, kernel = _random((2, 5, 7, 3), 1), _random((3, 3, 3, 4), 2)
    out = lmconv.locally_masked_conv(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(kernel),
                                     dilation, method)
    np.testing.assert_allclose(out, loop_conv(x, mask, kernel, dilation), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", lmconv.METHODS)
@pytest.mark.parametrize("k,dilation", [(3, 1), (3, 2), (5, 2)])
def test_all_ones_mask_is_a_plain_convolution(method, k, dilation):
    x, kernel = _random((2, 9, 8, 3), 3), _random((k, k, 3, 5), 4)
    pad = dilation * (k // 2)
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(pad, pad), (pad, pad)], rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = lmconv.locally_masked_conv(x, jnp.ones((k * k, 9, 8)), kernel, dilation, method)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def pixelcnn_weight_mask(k, mask_type):
    """The PixelCNN weight mask (the authors' `masked_conv2d`): rows above the centre,
    the centre row left of the centre, the centre itself for type B; [k, k]."""
    m = np.ones((k, k), np.float32)
    m[k // 2, k // 2:] = 0.0
    m[k // 2 + 1:] = 0.0
    if mask_type == "B":
        m[k // 2, k // 2] = 1.0
    return m


@pytest.mark.parametrize("method", lmconv.METHODS)
@pytest.mark.parametrize("k,dilation", [(3, 1), (5, 1), (3, 2)])
@pytest.mark.parametrize("first_layer", [True, False])
def test_raster_order_is_the_weight_masked_pixelcnn_conv(method, k, dilation, first_layer):
    h, w = 7, 6
    mask = lmconv.order_masks(orders.rank_grid(orders.raster(h, w), h, w), k, dilation,
                              first_layer)
    x, kernel = _random((2, h, w, 3), 5), _random((k, k, 3, 4), 6)
    weight_mask = pixelcnn_weight_mask(k, "A" if first_layer else "B")[:, :, None, None]
    pad = dilation * (k // 2)
    expected = jax.lax.conv_general_dilated(
        x, kernel * weight_mask, (1, 1), [(pad, pad), (pad, pad)],
        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = lmconv.locally_masked_conv(x, jnp.asarray(mask), kernel, dilation, method)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def torch_fig54(x, mask, kernel, bias, dilation):
    """The forward pass of Fig. 5.4 (the authors' `_locally_masked_conv2d`), NCHW torch."""
    import torch
    import torch.nn.functional as F
    x = torch.tensor(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    weight = torch.tensor(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))
    mask = torch.tensor(mask.reshape(mask.shape[0], -1))              # [k², H W]
    c_out, c_in, k1, k2 = weight.shape
    h, w = x.shape[2], x.shape[3]
    unf = F.unfold(x, (k1, k2), dilation=dilation, padding=dilation * (k1 // 2))
    unf = (unf.view(x.size(0) * c_in, unf.size(1) // c_in, unf.size(2)) * mask).view(unf.shape)
    y = weight.view(c_out, -1).matmul(unf) + torch.tensor(bias)[None, :, None]
    return np.transpose(y.view(x.size(0), c_out, h, w).numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize("method", lmconv.METHODS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_flax_layer_matches_the_torch_port(method, dilation):
    h, w = 8, 8
    order = orders.variant("s_curve", h, w, 5)
    mask = lmconv.order_masks(orders.rank_grid(order, h, w), 3, dilation)
    x = _random((2, h, w, 4), 7)
    layer = lmconv.LMConv(6, 3, dilation, method)
    params = layer.init(jax.random.PRNGKey(0), x, mask)
    out = layer.apply(params, x, mask)
    p = params["params"]
    expected = torch_fig54(x, mask, np.asarray(p["kernel"]), np.asarray(p["bias"]), dilation)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    bound = 1.0 / np.sqrt(9 * 4)      # PyTorch's Conv2d init range
    assert np.abs(p["kernel"]).max() <= bound and np.abs(p["bias"]).max() <= bound


def test_both_methods_agree_with_gradients():
    h, w = 6, 6
    mask = jnp.asarray(lmconv.order_masks(
        orders.rank_grid(orders.variant("s_curve", h, w, 2), h, w), 3, 2, first_layer=True))
    x, kernel = _random((2, h, w, 3), 8), _random((3, 3, 3, 5), 9)

    def loss(method):
        return lambda x, kern: jnp.sum(jnp.sin(lmconv.locally_masked_conv(x, mask, kern, 2,
                                                                          method)))
    grads = [jax.grad(loss(m), argnums=(0, 1))(x, kernel) for m in lmconv.METHODS]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_masks_reject_even_kernels_and_unknown_methods():
    with pytest.raises(ValueError, match="odd kernel"):
        lmconv.order_masks(np.zeros((4, 4), int), 4)
    with pytest.raises(ValueError, match="unknown LMConv method"):
        lmconv.locally_masked_conv(jnp.zeros((1, 4, 4, 1)), jnp.ones((9, 4, 4)),
                                   jnp.zeros((3, 3, 1, 1)), 1, "fft")


def test_stacked_masks_select_one_order():
    stacked = lmconv.stack_masks(orders.variants("s_curve", 4, 4), 4, 4, 3, 2)
    assert stacked.first.shape == (8, 9, 4, 4)
    one = lmconv.masks_for_order(orders.variant("s_curve", 4, 4, 3), 4, 4, 3, 2)
    for a, b in zip(jax.tree.leaves(stacked.select(3)), jax.tree.leaves(one)):
        np.testing.assert_array_equal(a, b)
    assert float(one.first[4].max()) == 0.0 and float(one.later[4].min()) == 1.0
