"""The autoregressive property of the Locally Masked PixelCNN (fdm/nn/lmconv_net.py) for
every order: with random weights, the Jacobian of each output pixel with respect to the
input is zero for every pixel not generated before it, and its non-zero pattern equals the
reachability of the mask graph (no blind spot under the S-curve and Hilbert orders, the
known blind spot under raster; seed 004 §2.4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.autoregressive import orders
from fdm.nn.lmconv import masks_for_order
from fdm.nn.lmconv_net import LocallyMaskedPixelCNN

H = W = 8
NUM_RES = 1
NET = LocallyMaskedPixelCNN(out_channels=3, features=4, num_res=NUM_RES, method="im2col")
ORDERS = ([("s_curve", k) for k in range(8)] + [("hilbert", k) for k in range(8)]
          + [("raster", 0), ("raster", 5), ("random", 0)])


def order_of(name, index):
    if name == "random":
        return np.random.default_rng(index).permutation(H * W)
    return orders.variant(name, H, W, index)


def adjacency(mask, dilation):
    """bool [D, D]: output pixel p reads input pixel q through an open tap of mask [k², H, W]."""
    k = int(round(np.sqrt(mask.shape[0])))
    adj = np.zeros((H * W, H * W), bool)
    for t in range(k * k):
        dr, dc = dilation * (t // k - k // 2), dilation * (t % k - k // 2)
        for r in range(H):
            for c in range(W):
                if mask[t, r, c] and 0 <= r + dr < H and 0 <= c + dc < W:
                    adj[r * W + c, (r + dr) * W + c + dc] = True
    return adj


def reachability(masks, dilation=2):
    """bool [D, D]: which input pixels each output pixel can depend on, by composing the
    mask graphs along the network (residuals and 1x1 layers keep a pixel's own set)."""
    first, later = adjacency(np.asarray(masks.first), 1), adjacency(np.asarray(masks.later), 1)
    dilated = adjacency(np.asarray(masks.dilated), dilation)
    then = lambda adj, rel: (adj.astype(int) @ rel.astype(int)) > 0

    def block(x, skip=None):
        h = then(later, x) if skip is None else then(later, x) | skip
        return x | then(later, h)

    us = [then(first, np.eye(H * W, dtype=bool))]
    for stage in range(3):
        for _ in range(NUM_RES):
            us.append(block(us[-1]))
        if stage < 2:
            us.append(then(dilated, us[-1]))
    u = us.pop()
    for stage, depth in enumerate((NUM_RES, NUM_RES + 1, NUM_RES + 1)):
        for _ in range(depth):
            u = block(u, us.pop())
        if stage < 2:
            u = then(dilated, u)
    return u


@pytest.fixture(scope="module")
def jacobian_fn():
    """jit(x [H, W], masks) -> Jacobian [D, D] of a random projection of the outputs."""
    masks = masks_for_order(orders.raster(H, W), H, W, 3, 2)
    shapes = jax.eval_shape(NET.init, jax.random.PRNGKey(0), jnp.zeros((1, H, W, 1)), masks)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.uniform(-0.5, 0.5, s.shape), jnp.float32), shapes)
    v = jnp.asarray(rng.standard_normal(3), jnp.float32)
    f = lambda x, m: (NET.apply(params, x[None, ..., None], m)[0] @ v).reshape(-1)
    return jax.jit(jax.jacfwd(f))


@pytest.mark.parametrize("name,index", ORDERS)
def test_jacobian_support_is_the_reachable_past(jacobian_fn, name, index):
    order = order_of(name, index)
    masks = masks_for_order(order, H, W, 3, 2)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((H, W)), jnp.float32)
    support = np.abs(np.asarray(jacobian_fn(x, masks))).reshape(H * W, H * W) > 0
    ranks = orders.rank_grid(order, H, W).reshape(-1)
    past = ranks[None, :] < ranks[:, None]             # [p, q]: q generated before p
    assert not np.any(support & ~past)                 # the autoregressive property
    np.testing.assert_array_equal(support, reachability(masks))
    if name in ("s_curve", "hilbert"):                 # adjacent paths: no blind spot
        np.testing.assert_array_equal(support, past)
    if name == "raster":                               # the PixelCNN blind spot
        assert support.sum() < past.sum()
    if (name, index) == ("raster", 0):                 # (2, 2) never sees (1, 5)
        assert past[2 * W + 2, W + 5] and not support[2 * W + 2, W + 5]
