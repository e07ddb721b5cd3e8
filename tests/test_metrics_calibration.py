"""fdm.metrics.calibration against closed forms: a sampler that draws from the truth's own
distribution scores 1, a narrower or wider one sqrt((1 + 1/M) s^2 / (sigma^2 + s^2 / M)),
a deterministic one 0; the terms against a loop written out per pixel."""
import numpy as np
import pytest

from fdm.metrics import calibration


def _posterior_draws(rng, n, m, sample_scale, shape=(6, 5, 3)):
    """N truths and N x M samples: per-position Gaussian posteriors N(mu, 1), the truth one
    draw, the samples M draws scaled by sample_scale about mu."""
    mu = rng.normal(0.0, 3.0, (n,) + shape)
    truth = mu + rng.normal(size=mu.shape)
    samples = mu[:, None] + sample_scale * rng.normal(size=(n, m) + shape)
    return samples, truth


@pytest.mark.parametrize("m", [2, 4, 8])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_a_sampler_of_known_width_scores_its_closed_form(m, scale):
    samples, truth = _posterior_draws(np.random.default_rng(m), 4000, m, scale)
    expected = np.sqrt((1 + 1 / m) * scale ** 2 / (1.0 + scale ** 2 / m))
    assert calibration.spread_skill_ratio(samples, truth) == pytest.approx(expected, rel=0.02)


def test_calibrated_means_one_and_the_ratio_is_scale_free():
    samples, truth = _posterior_draws(np.random.default_rng(0), 4000, 4, 1.0)
    ratio = calibration.spread_skill_ratio(samples, truth)
    assert ratio == pytest.approx(1.0, rel=0.02)
    assert calibration.spread_skill_ratio(0.5 * samples + 0.5, 0.5 * truth + 0.5) == \
        pytest.approx(ratio, rel=1e-12)


def test_identical_samples_score_zero_and_an_exact_mean_nan():
    rng = np.random.default_rng(1)
    truth = rng.integers(-8, 8, (3, 4, 4, 3)) / 8.0       # dyadic: the mean of copies is exact
    wrong = np.repeat((truth + 1.0)[:, None], 5, 1)
    assert calibration.spread_skill_ratio(wrong, truth) == 0.0
    assert np.isnan(calibration.spread_skill_ratio(np.repeat(truth[:, None], 5, 1), truth))
    assert np.isnan(calibration.spread_skill_ratio(wrong, truth, np.zeros((3, 4, 4), bool)))
    with pytest.raises(ValueError, match="M >= 2"):
        calibration.spread_skill_ratio(wrong[:, :1], truth)


def test_terms_and_mask_against_a_loop_over_pixels():
    rng = np.random.default_rng(2)
    samples, truth = rng.normal(size=(3, 4, 5, 6, 2)), rng.normal(size=(3, 5, 6, 2))
    mask = rng.random((3, 5, 6)) < 0.4
    spread_sum = error_sum = 0.0
    for i, y, x in zip(*np.nonzero(mask)):
        s = samples[i, :, y, x]                                    # [M, C]
        spread_sum += sum(np.sum((s[:, c] - s[:, c].mean()) ** 2) / 3 for c in range(2)) / 2
        error_sum += sum((s[:, c].mean() - truth[i, y, x, c]) ** 2 for c in range(2)) / 2
    expected = np.sqrt(1.25 * spread_sum / error_sum)
    assert calibration.spread_skill_ratio(samples, truth, mask) == pytest.approx(expected,
                                                                                 rel=1e-12)
