"""`--mode=evaluate` with eval.metric_weights: FID / KID of generated samples in results.json."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm import run as run_lib
from fdm.errors import UserError
from fdm.metrics import fid
from fdm.metrics.inception import InceptionFeatureExtractor, variable_shapes
from fdm.metrics.weights import load_metric_variables, save_metric_weights
from fdm.models import get_family
from tests.test_ddpm_family import tiny_config as ddpm_tiny_config
from tests.test_fdm_family import tiny_config as fdm_tiny_config


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
    """A metric-weights .npz holding a random Inception-v3 (He-scaled kernels, BatchNorm
    statistics 0 / 1; built from the shapes, no compile)."""
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape)
        return np.ones(s.shape) if name in ("scale", "var") else np.zeros(s.shape)

    variables = jax.tree_util.tree_map_with_path(fill, variable_shapes())
    path = str(tmp_path_factory.mktemp("weights") / "metric_weights.npz")
    save_metric_weights(path, {"inception": variables})
    return path


def _family(config, **eval_keys):
    """(family, initial params) of `config` with eval keys replaced."""
    config.eval.update(eval_keys)
    family = get_family(config)
    size = config.data.image_size
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"),
                                         {"image": jnp.zeros((1, size, size, 3))})
    return family, params


def test_fid_kid_of_helper_matches_features(weights_path):
    """fid_kid = fid_from_features / kid of the extractor's pool3 features (kid_std: spread)."""
    rng = np.random.default_rng(0)
    real, fake = (rng.uniform(-1, 1, (5, 16, 16, 3)).astype(np.float32) for _ in range(2))
    variables = load_metric_variables(weights_path, "inception")
    out = fid.fid_kid(real, [fake[:3], fake[3:]], variables, batch_size=4)
    extract = InceptionFeatureExtractor(variables, batch_size=4)
    # the same batches as fid_kid's (features of other batch shapes may differ in the last
    # float32 bit, which a 5-sample FID amplifies past rel 1e-9)
    f_real, f_fake = extract(real), extract([fake[:3], fake[3:]])
    assert out["fid"] == pytest.approx(fid.fid_from_features(f_real, f_fake), rel=1e-9)
    assert out["kid"] == pytest.approx(fid.kid(f_real, f_fake), rel=1e-9)
    values = fid.kid_subset_values(f_real, f_fake)
    assert out["kid_std"] == pytest.approx(np.std(values), rel=1e-9)


def test_evaluate_writes_fid_and_kid(tmp_path, weights_path):
    """DDPM evaluate (FDM's runs it first) puts finite fid / kid next to sample_stats."""
    config = ddpm_tiny_config()
    config.name = "ddpm_fid_test"
    family, params = _family(config, metric_weights=weights_path, num_fid_samples=3)
    results = run_lib.evaluate(family.config, str(tmp_path), family, params, step=3,
                               rng=jax.random.PRNGKey(1))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == results
    for key in ("fid", "kid", "kid_std", "sample_pixel_w1"):
        assert np.isfinite(written[key]), key
    assert written["fid"] > 0 and written["kid_std"] >= 0


def test_missing_weights_file_is_one_line_error_before_any_work(tmp_path, monkeypatch):
    missing = str(tmp_path / "nope.npz")
    family, params = _family(fdm_tiny_config(), metric_weights=missing)
    monkeypatch.setattr(family, "_example_losses", lambda *a: pytest.fail("ran before the check"))
    with pytest.raises(UserError) as info:
        family.evaluate(params, iter([]), str(tmp_path), jax.random.PRNGKey(0))
    message = str(info.value)
    assert "\n" not in message and missing in message and "eval.metric_weights" in message
