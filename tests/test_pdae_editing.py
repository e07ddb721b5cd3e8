"""Editing with a trained PDAE / DiffSiam encoder (seed 002, thesis sec. 4.2): slerp and
the segment lerp (`fdm.diffusion.pdae`) against their closed forms, the ProbMask
classifier (`fdm.metrics.probmask`), counterfactuals (Alg. 2) and attribute manipulation
(Alg. 3) of `fdm.models.pdae` at lambda = 0 against the inverted reconstruction, and the
smoke config's sample mode (both figures) and few-shot metrics.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.diffusion.pdae import lerp_segments, slerp
from fdm.metrics import probmask
from fdm.models import get_family
from fdm.models.pdae import counterfactual_subsets
from tests import helpers
from tests.test_pdae_family import init, perturbed, smoke_config, tiny_dm_config


@pytest.fixture(scope="module")
def dm_workdir(tmp_path_factory) -> str:
    """A DDPM trained for one step (configs/ddpm.py:factors, shrunk): the frozen DM."""
    from fdm import run
    workdir = str(tmp_path_factory.mktemp("pdae_editing") / "dm")
    run.run(tiny_dm_config(), workdir)
    return workdir


# ------------------------------------------------------------------ slerp, lerp
def test_slerp_endpoints_are_exact():
    a = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 2))
    b = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 2))
    np.testing.assert_array_equal(slerp(a, b, 0.0), a)
    np.testing.assert_array_equal(slerp(a, b, 1.0), b)


def test_slerp_of_orthogonal_unit_vectors_is_the_circle_arc():
    e1, e2 = jnp.eye(4)[None, 0], jnp.eye(4)[None, 1]
    for lam in (0.25, 0.5, 0.8):
        out = np.asarray(slerp(e1, e2, lam))[0]
        expected = np.cos(lam * np.pi / 2) * np.eye(4)[0] + np.sin(lam * np.pi / 2) * np.eye(4)[1]
        np.testing.assert_allclose(out, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(out), 1.0, atol=1e-6)


def test_slerp_matches_the_closed_form_and_keeps_equal_norms():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    b *= np.linalg.norm(a, axis=1, keepdims=True) / np.linalg.norm(b, axis=1, keepdims=True)
    lam = rng.uniform(size=5)
    theta = np.arccos(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    expected = (np.sin((1 - lam) * theta)[:, None] * a
                + np.sin(lam * theta)[:, None] * b) / np.sin(theta)[:, None]
    out = np.asarray(slerp(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                           jnp.asarray(lam, jnp.float32)))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(a, axis=1), rtol=1e-5)


def test_slerp_of_parallel_inputs_is_the_lerp():
    a = jnp.asarray([[1.0, 2.0, -1.0]])
    np.testing.assert_allclose(slerp(a, 3.0 * a, 0.25), 1.5 * a, rtol=1e-6)


def test_lerp_segments_moves_only_the_chosen_segments():
    z = jnp.arange(8.0)[None]
    z_other = z + 10.0
    np.testing.assert_array_equal(lerp_segments(z, z_other, (2,), 0.5, 4),
                                  [[0, 1, 7, 8, 4, 5, 6, 7]])
    np.testing.assert_array_equal(lerp_segments(z, z_other, (), 0.5, 4), z)
    np.testing.assert_array_equal(lerp_segments(z, z_other, (1, 2, 3, 4), 1.0, 4), z_other)


def test_counterfactual_subsets_split_fine_and_coarse_segments():
    assert counterfactual_subsets(8, 0.375) == {"coarse": (6, 7, 8), "fine": (1, 2, 3),
                                                "all": tuple(range(1, 9))}
    assert counterfactual_subsets(4, 0.375) == {"coarse": (3, 4), "fine": (1, 2),
                                                "all": (1, 2, 3, 4)}
    assert counterfactual_subsets(1, 0.375) == {"coarse": (1,), "fine": (1,), "all": (1,)}


# ------------------------------------------------------------------ ProbMask
def separable_set(n: int = 600, d: int = 16, seed: int = 0):
    """(z [N, d] with dims of different scales, y [N] bool): y = u_3 - u_7 / 2 > median
    on standardised z, the points within 0.3 of the boundary dropped (a margin)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    score = z[:, 3] / z[:, 3].std() - 0.5 * z[:, 7] / z[:, 7].std()
    keep = np.abs(score - np.median(score)) > 0.3
    return z[keep], score[keep] > np.median(score)


def test_sparse_classifier_has_d_prime_nonzeros_and_separates_a_separable_set():
    z, y = separable_set()
    clf = probmask.fit_sparse_classifier(z, y, 2)
    assert np.count_nonzero(clf.weights) == 2
    np.testing.assert_array_equal(clf.support, [3, 7])
    assert clf.accuracy(z, y) == 1.0
    for num in (5, 0):
        dense = probmask.fit_sparse_classifier(z, y, num)
        assert np.count_nonzero(dense.weights) == (num or 16)
        assert dense.accuracy(z, y) == 1.0
    direction = clf.direction()
    np.testing.assert_allclose(direction, clf.sigma * clf.weights / np.linalg.norm(clf.weights),
                               rtol=1e-6)


def test_score_projection_meets_the_budget():
    s = probmask.project_scores(jnp.asarray([0.9, 0.5, 0.1, 2.0, -1.0]), 2.0)
    assert float(jnp.sum(s)) == pytest.approx(2.0, abs=1e-5)
    assert float(jnp.min(s)) >= 0.0 and float(jnp.max(s)) <= 1.0
    np.testing.assert_allclose(s, [0.7, 0.3, 0.0, 1.0, 0.0], atol=1e-5)


# ------------------------------------------------------------------ Alg. 2 and 3
ATOL = 1e-5    # pixels in [-1, 1] through a few float32 DDIM steps of differently compiled programs
def test_counterfactual_and_manipulation_at_lambda_zero_are_the_inverted_reconstruction(
        dm_workdir):
    """lambda = 0 (and S empty): Alg. 2 and Alg. 3 are guided DDIM from the inversion of
    x0 guided by z(x0), the 'inverted' reconstruction; lambda = 1 on all segments is that
    of x0'. Compared to ATOL: the programs differ (batch size, fusion), so float32 rounding
    of O(1) pixels through the smoke config's 2 + 2 DDIM steps, a few 1e-7 per step, is
    allowed; the edits themselves move pixels by more than 1e-4. g is perturbed away from
    0, so the guidance matters."""
    family = get_family(smoke_config(dm_workdir))
    params, batch = init(family)
    params = perturbed(params)
    x0, x0_other = batch["image"][:4], batch["image"][4:]
    recon = family.reconstructions(params, x0, jax.random.PRNGKey(0))["inverted"]
    for subset in ((), (1, 2, 3, 4)):
        counterfactual = family.counterfactuals(params, x0, x0_other, [subset], [0.0])
        np.testing.assert_allclose(counterfactual[0, 0], recon, atol=ATOL)
    batched = family.counterfactuals(params, x0, x0_other, [(), (1, 2, 3, 4)], [0.0, 0.5])
    np.testing.assert_allclose(batched[:, 0], np.stack([recon, recon]), atol=ATOL)
    assert np.max(np.abs(batched[:, 1] - recon)) > 1e-4
    direction = jax.random.normal(jax.random.PRNGKey(2), (family.z_dim,))
    np.testing.assert_allclose(family.manipulations(params, x0, direction, [0.0])[0], recon,
                               atol=ATOL)
    assert np.max(np.abs(family.manipulations(params, x0, direction, [3.0])[0] - recon)) > 1e-4
    other = family.reconstructions(params, x0_other, jax.random.PRNGKey(0))["inverted"]
    swapped = family.counterfactuals(params, x0, x0_other, [(1, 2, 3, 4)], [1.0])[0, 0]
    np.testing.assert_allclose(swapped, other, atol=ATOL)


def test_full_z_guidance_differs_from_the_masked_default(dm_workdir):
    """eval.guidance_z = "full" feeds all of z at every t (Alg. 2/3 as printed), the
    default masks it per t as in training (brief D10)."""
    outputs = []
    for mode in ("masked", "full"):
        config = smoke_config(dm_workdir)
        config.eval.guidance_z = mode
        family = get_family(config)
        params, batch = init(family)
        x0 = batch["image"][:2]
        outputs.append(family.guided_ddim(perturbed(params), family.encode(params, x0),
                                          family.invert(params, x0)))
    assert float(jnp.max(jnp.abs(outputs[0] - outputs[1]))) > 1e-4


def test_manipulation_without_labels_is_skipped(dm_workdir, tmp_path):
    family = get_family(smoke_config(dm_workdir))
    params, batch = init(family)
    images = np.zeros((4, 8, 8, 3), np.uint8)
    family.sample_manipulations(params, {"image": images}, str(tmp_path))
    assert not os.path.exists(tmp_path / "manipulation.png")


def test_smoke_sample_writes_both_figures_and_evaluate_the_few_shot_metrics(dm_workdir,
                                                                           tmp_path):
    """configs/pdae.py:smoke trained in process; `--mode=sample` through the command line
    writes counterfactual.png (2 pairs x (x0, x0', 3 subsets x 2 scales)) and
    manipulation.png (obj_hue=1 and shape=1, one row each, 5 scales); evaluate adds the
    few-shot episodes per factor."""
    from fdm import run
    workdir = str(tmp_path / "pdae")
    config = smoke_config(dm_workdir)
    config.eval.at_end = False
    run.run(config, workdir)
    results = run.run(config, workdir, mode="evaluate")
    assert 0.0 <= results["fewshot_stripe_2way_1shot"] <= 1.0
    assert "fewshot_stripe_2way_1shot_ci95" in results
    with open(os.path.join(workdir, "results.json")) as f:
        assert "fewshot_stripe_2way_1shot" in json.load(f)
    proc = helpers.run_main("--config=configs/pdae.py:smoke", "--mode=sample",
                            f"--config.model.frozen_dm_workdir={dm_workdir}",
                            f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = os.path.join(workdir, "samples")
    for name in ("recon", "counterfactual", "manipulation"):
        assert os.path.isfile(os.path.join(samples, f"{name}.png")), name
    counterfactual = np.load(os.path.join(samples, "counterfactual.npz"))
    assert counterfactual["images"].shape == (3, 2, 2, 8, 8, 3)
    np.testing.assert_array_equal(counterfactual["subset_fine"], [1, 2])
    manipulation = np.load(os.path.join(samples, "manipulation.npz"))
    assert manipulation["images"].shape == (5, 2, 8, 8, 3)
    assert list(manipulation["attribute"]) == ["obj_hue=1", "shape=1"]
