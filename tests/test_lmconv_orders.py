"""Generation orders (fdm/autoregressive/orders.py): permutations, 4-adjacent paths, the 8
distinct S-curve variants of Fig. 5.1, the Hilbert curve against the `hilbertcurve`
package, and the completion orders of Table 2.3."""
import numpy as np
import pytest

from fdm.autoregressive import orders
from fdm.errors import UserError

SIZES = [(8, 8), (6, 10), (7, 5), (28, 28), (1, 6)]


@pytest.mark.parametrize("name", orders.ORDERS)
@pytest.mark.parametrize("h,w", SIZES)
def test_every_variant_is_a_permutation(name, h, w):
    for order in orders.variants(name, h, w):
        assert orders.is_permutation(order, h * w)
        ranks = orders.rank_grid(order, h, w)
        assert np.array_equal(ranks.reshape(-1)[order], np.arange(h * w))


@pytest.mark.parametrize("h,w", SIZES)
def test_s_curves_are_4_adjacent_paths_and_raster_is_not(h, w):
    assert all(orders.is_adjacent_path(o, w) for o in orders.variants("s_curve", h, w))
    if w > 1 and h > 1:
        assert not orders.is_adjacent_path(orders.raster(h, w), w)


def test_s_curve_rows_alternate():
    np.testing.assert_array_equal(orders.s_curve(3, 3), [0, 1, 2, 5, 4, 3, 6, 7, 8])


def test_the_8_s_curve_variants_are_distinct_and_start_in_every_corner():
    h = w = 8
    vs = orders.variants("s_curve", h, w)
    assert len({tuple(v) for v in vs}) == 8
    starts = {divmod(int(v[0]), w) for v in vs}
    assert starts == {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)}
    second = {(divmod(int(v[0]), w), divmod(int(v[1]), w)) for v in vs}
    assert len(second) == 8                     # each corner row- and column-wise
    # the authors' augment_orders: variant 1 reflects the rows, 4 transposes
    r, c = np.divmod(vs[0], w)
    np.testing.assert_array_equal(vs[1], (h - 1 - r) * w + c)
    np.testing.assert_array_equal(vs[4], c * w + r)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_hilbert_matches_the_hilbertcurve_package(p):
    from hilbertcurve.hilbertcurve import HilbertCurve
    n = 2 ** p
    points = np.asarray(HilbertCurve(p, 2).points_from_distances(range(n * n)))   # (x, y)
    np.testing.assert_array_equal(orders.hilbert(n, n), points[:, 1] * n + points[:, 0])
    assert orders.is_adjacent_path(orders.hilbert(n, n), n)


@pytest.mark.parametrize("h,w", [(28, 28), (8, 6), (6, 10), (10, 4)])
def test_generalised_hilbert_is_an_adjacent_path_on_even_sizes(h, w):
    assert orders.is_adjacent_path(orders.hilbert(h, w), w)


def test_unknown_order_is_a_one_line_user_error():
    with pytest.raises(UserError, match="unknown generation order 'zigzag'; use one of"):
        orders.base_order("zigzag", 4, 4)


def test_completion_orders_of_the_halves():
    h = w = 8
    vs = orders.variants("s_curve", h, w)
    hidden = orders.half_regions(h, w)
    assert int(hidden["top"].sum()) == int(hidden["left"].sum()) == 32
    for half, region in hidden.items():
        best, worst = orders.completion_orders(vs, ~region)
        assert len(best) == 2 and len(worst) == 2          # 2 max-context orders (Table 2.3)
        for k in best:
            assert orders.generates_first(vs[k], ~region)
            assert not region.reshape(-1)[vs[k][:32]].any()
        for k in worst:
            assert orders.generates_first(vs[k], region)
    # top hidden: the S-curve from the top left is adversarial, the row-reflected one
    # (bottom left to top left) is max-context, as in §2.6.3
    best, worst = orders.completion_orders(vs, ~hidden["top"])
    assert 0 in worst and 1 in best


def test_observed_first_keeps_the_relative_order():
    order = orders.s_curve(4, 4)
    observed = np.zeros((4, 4), bool)
    observed[2:, 1] = True
    out = orders.observed_first(order, observed)
    assert orders.is_permutation(out, 16) and orders.generates_first(out, observed)
    np.testing.assert_array_equal(out[:2], [9, 13])
    rest = [p for p in order if p not in (9, 13)]
    np.testing.assert_array_equal(out[2:], rest)
