"""Label-free mask diagnostics (fdm.metrics.mask_diagnostics) and their FDM evaluation."""
import numpy as np
import pytest

from fdm.metrics import mask_diagnostics as md


def _pointwise_masks(x):
    """Masks that are a function of each pixel's colour alone: [N,S,S,3] -> [N,S,S,2]."""
    logit = 4 * (x[..., 0] - x[..., 1])
    p = 1 / (1 + np.exp(-logit))
    return np.stack([1 - p, p], -1)


def _positional_masks(x):
    """Masks that ignore the image: a centred square."""
    s = x.shape[1]
    sq = np.zeros((s, s))
    sq[s // 4:3 * s // 4, s // 4:3 * s // 4] = 1
    return np.broadcast_to(np.stack([1 - sq, sq], -1), x.shape[:3] + (2,))


def _error(masks_fn, x, d, dy, dx):
    canvas = md.shift_canvas(x, d)
    s = x.shape[1]
    return md.shift_error(masks_fn(md.window(canvas, 0, 0, s)),
                          masks_fn(md.window(canvas, dy, dx, s)), dy, dx)


def test_masks_that_follow_content_have_no_shift_error():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3))
    for d, dy, dx in ((4, 4, 0), (4, 0, 4), (8, 8, 0)):
        assert _error(_pointwise_masks, x, d, dy, dx) == pytest.approx(0.0, abs=1e-12)


def test_masks_fixed_in_place_have_the_closed_form_shift_error():
    x = np.zeros((2, 16, 16, 3))
    # square [4, 12)^2 vs the same square moved by 4 rows: on the overlap rows 4..15 of A
    # (i.e. rows 0..11 of B) the masks differ where exactly one square covers the pixel.
    a = _positional_masks(x)[0, 4:, :, 1]
    b = _positional_masks(x)[0, :12, :, 1]
    want = np.abs(a - b).mean()
    assert _error(_positional_masks, x, 4, 4, 0) == pytest.approx(want)
    assert want > 0.2


def test_canvas_is_a_reflection_and_windows_are_shifted_content():
    x = np.arange(2 * 4 * 4 * 1, dtype=float).reshape(2, 4, 4, 1)
    canvas = md.shift_canvas(x, 2)
    assert canvas.shape == (2, 6, 6, 1)
    np.testing.assert_array_equal(canvas[:, :4, :4], x)
    np.testing.assert_array_equal(canvas[:, 4, :4], x[:, 2])   # reflect: row 4 mirrors row 2
    np.testing.assert_array_equal(md.window(canvas, 2, 0, 4)[:, :2], x[:, 2:])


def test_entropy_of_uniform_and_one_hot_masks():
    uniform = np.full((2, 4, 4, 3), 1 / 3)
    one_hot = np.eye(3)[np.random.default_rng(1).integers(0, 3, (2, 4, 4))]
    assert md.mask_entropy(uniform) == pytest.approx(1.0)
    assert md.mask_entropy(one_hot) == pytest.approx(0.0, abs=1e-9)
    half = np.stack([np.full((1, 2, 2), 0.5), np.full((1, 2, 2), 0.5)], -1)
    assert md.mask_entropy(half) == pytest.approx(1.0)
