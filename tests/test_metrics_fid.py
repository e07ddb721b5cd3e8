"""FID / KID math against independent references (scipy sqrtm, closed forms, double loops)."""
import numpy as np
import pytest
import scipy.linalg

from fdm.metrics.fid import feature_statistics, fid_from_features, frechet_distance, kid


def _features(rng, n, d, shift=0.0, scale=1.0):
    """Correlated heavy-tailed features [n, d]; the mixing matrix depends on d only."""
    mix = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d)
    return shift + scale * rng.standard_t(5, size=(n, d)) @ mix


def _fid_scipy(x, y):
    """Textbook FID: scipy.linalg.sqrtm of Σ1 Σ2 (pytorch-fid's formula) in float64."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


@pytest.mark.parametrize("n1,n2,d", [(200, 300, 16), (500, 400, 64)])
def test_frechet_distance_matches_scipy_sqrtm(n1, n2, d):
    rng = np.random.default_rng(d)
    x, y = _features(rng, n1, d), _features(rng, n2, d, shift=0.3, scale=1.5)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(fid_from_features(x, y), _fid_scipy(x, y), rtol=1e-8)


def test_frechet_distance_diagonal_closed_form():
    """Diagonal Σ: d² = ||μ1-μ2||² + Σ_i (√a_i - √b_i)²."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("n1,n2", [(20, 30), (3, 3), (64, 64)])
def test_few_samples_path_matches_statistics_path(n1, n2):
    """N1, N2 <= D (singular Σ): the exact cross-Gram path agrees with the eigen-based
    `frechet_distance` and with scipy up to their √round-off error, is 0 against itself."""
    rng = np.random.default_rng(n1)
    x, y = _features(rng, n1, 64), _features(rng, n2, 64, shift=0.1)
    got = fid_from_features(x, y)
    by_stats = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert got == pytest.approx(by_stats, rel=1e-6)
    assert got == pytest.approx(_fid_scipy(x, y), rel=1e-6)
    assert got == pytest.approx(fid_from_features(y, x), rel=1e-12)
    assert abs(fid_from_features(x, x)) < 1e-10 * np.trace(np.cov(x, rowvar=False))


def _mmd2_double_loop(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³ by explicit sums (n1 may differ from n2)."""
    d = x.shape[1]
    k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3  # noqa: E731
    n1, n2 = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n1) for j in range(n1) if i != j) / (n1 * (n1 - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n2) for j in range(n2) if i != j) / (n2 * (n2 - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n1) for j in range(n2)) / (n1 * n2)
    return kxx + kyy - 2 * kxy


def test_kid_full_set_matches_double_loop():
    """One subset holding all rows (a permutation: MMD² is invariant) = the plain U-statistic."""
    rng = np.random.default_rng(3)
    x, y = _features(rng, 40, 8), _features(rng, 40, 8, shift=0.2)
    want = _mmd2_double_loop(x, y)
    assert kid(x, y, num_subsets=1, subset_size=40) == pytest.approx(want, rel=1e-10)


def test_kid_subsets_are_unbiased():
    """E over random subsets of the subset U-statistic = the full-sample U-statistic."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 6)), rng.normal(size=(24, 6)) + 0.5
    full = _mmd2_double_loop(x, y)
    estimate = kid(x, y, num_subsets=4000, subset_size=8, seed=1)
    assert estimate == pytest.approx(full, rel=0.05)  # ~4 Monte-Carlo standard errors
    assert kid(x, y, 50, 8, seed=1) == kid(x, y, 50, 8, seed=1)  # deterministic given the seed


def test_kid_near_zero_for_same_distribution():
    rng = np.random.default_rng(5)
    x, y, z = _features(rng, 300, 16), _features(rng, 300, 16), _features(rng, 300, 16, shift=0.5)
    same, different = kid(x, y, 20, 100), kid(x, z, 20, 100)
    assert abs(same) < 0.1 * different


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        kid(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        fid_from_features(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
