"""The LMConv model family (fdm/models/lmconv.py, configs/lmconv.py) and its datasets: a
tiny rectangles8 model trained 2 steps through fdm.train, loaded with fdm.load, evaluated
(the ensemble bounds hold per image) and sampled (completions keep the observed pixels);
the datasets' known answers by enumeration (tests/test_lmconv_rectangles.py trains to
them)."""
import json
import os

import numpy as np
import pytest

import fdm
from configs import lmconv as lmconv_configs
from fdm import data
from fdm.autoregressive import orders
from fdm.data import digits, rectangles
from fdm.errors import UserError
from fdm.models import check_config, get_family

ENTROPY, HALF, HALF_GIVEN_REST = 10.3399, 6.6910, 3.6488


# ------------------------------------------------------------------ datasets


def test_rectangles8_known_answers_by_enumeration():
    images = rectangles.rectangles(8)
    assert images.shape == (1296, 8, 8, 1) and set(np.unique(images)) == {0, 255}
    assert len({im.tobytes() for im in images}) == 1296
    filled = images[..., 0] > 0
    rows, cols = filled.any(2), filled.any(1)
    for f, r, c in zip(filled, rows, cols):        # each image is one filled rectangle
        assert np.array_equal(f, np.outer(r, c)) and r.any()
        assert np.all(np.diff(np.flatnonzero(r)) == 1) and np.all(np.diff(np.flatnonzero(c)) == 1)
    e = rectangles.entropies(8)
    assert round(e["entropy_bits"], 4) == ENTROPY
    assert round(e["entropy_half_bits"], 4) == HALF
    assert round(e["entropy_half_given_rest_bits"], 4) == HALF_GIVEN_REST
    for half in ("top", "left", "bottom", "right"):            # every half alike
        assert round(rectangles._entropy_bits(rectangles.half_patterns(images, half)), 4) == HALF
    transposed = {im.transpose(1, 0, 2).tobytes() for im in images}
    assert transposed == {im.tobytes() for im in images}       # dihedral invariance


def test_rectangles_registry_and_bad_size():
    c = lmconv_configs.get_config("rectangles8")
    assert data.load_split_arrays(c, "eval")["image"].shape == (1296, 8, 8, 1)
    with pytest.raises(UserError, match="image_size=7 is invalid for rectangles"):
        rectangles.load(None, 7, "train")


def test_digits_on_17_levels():
    c = lmconv_configs.get_config("digits")
    train, test = (data.load_split_arrays(c, s) for s in ("train", "eval"))
    assert train["image"].shape == (1437, 8, 8, 1) and test["image"].shape == (360, 8, 8, 1)
    x = train["image"] / 127.5 - 1.0
    k = np.round((x + 1) / 2 * 16)
    assert np.abs(x - (2 * k / 16 - 1)).max() < 0.005 and k.max() == 16
    with pytest.raises(UserError, match="image_size=28 is invalid for digits"):
        digits.load(None, 28, "train")


def test_binarized_mnist_missing_is_a_one_line_error(tmp_path):
    c = lmconv_configs.get_config("binarized_mnist")
    c.data.data_dir = str(tmp_path)
    with pytest.raises(UserError) as info:
        data.load_split_arrays(c, "train")
    message = str(info.value)
    assert "\n" not in message and "tfds build binarized_mnist" in message


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("variant", ["", "binarized_mnist", "rectangles8", "digits", "smoke"])
def test_configs_pass_their_rules(variant):
    c = lmconv_configs.get_config(variant)
    check_config(c)
    assert c.model.family == "lmconv"


def test_paper_network_has_46m_parameters():
    import jax
    import jax.numpy as jnp
    family = get_family(lmconv_configs.get_config())
    shapes = jax.eval_shape(family.init_params, jax.random.PRNGKey(0),
                            {"image": jnp.zeros((1, 32, 32, 3))})
    count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert 45.9e6 < count < 46.2e6, count


def test_categorical_needs_one_channel_and_images_must_match():
    c = lmconv_configs.get_config("rectangles8")
    c.model.channels = 3
    with pytest.raises(UserError, match="model.likelihood='categorical' is invalid"):
        check_config(c)
    family = get_family(lmconv_configs.get_config("smoke"))
    with pytest.raises(UserError, match=r"images are \(8, 8, 3\)"):
        family.init_params(None, {"image": np.zeros((1, 8, 8, 3), np.float32)})


def test_completion_orders_fall_back_to_observed_first():
    c = lmconv_configs.get_config("smoke")
    full = get_family(c).completion_orders()
    assert all(len(best) == 2 for best, _ in full.values())
    c.model.num_orders = 1
    one = get_family(c).completion_orders()
    for half, hidden in orders.half_regions(8, 8).items():
        (best,), worst = one[half]
        assert orders.generates_first(best, ~hidden) and orders.generates_first(worst, hidden)


# ------------------------------------------------------------------ train, load, evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step smoke run (configs/lmconv.py:smoke) with its evaluation and samples."""
    from fdm import run
    workdir = str(tmp_path_factory.mktemp("lmconv"))
    config = lmconv_configs.get_config("smoke")
    run.run(config, workdir, "train")            # eval.at_end: results.json and samples
    return workdir, config


def test_trained_model_loads_and_evaluates(trained):
    workdir, config = trained
    model = fdm.load(workdir)
    assert model.step == 2 and model.family.net.features == 8
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    assert r["step"] == 2 and r["config"] == "lmconv_smoke"
    assert r["ensemble_bounds_hold"] == 1.0
    assert round(r["entropy_bits"], 4) == ENTROPY
    whole = [k for k in r if k.startswith("nll_bits_") and not
             k.startswith(("nll_bits_top", "nll_bits_left", "nll_bits_bottom"))]
    assert {"nll_bits_order7", "nll_bits_ensemble", "nll_bits_raster",
            "nll_bits_hilbert"} <= set(whole)
    num_images = config.eval.num_examples
    nll = np.load(os.path.join(workdir, "lmconv_eval.npz"))
    assert nll["orders"].shape == (num_images, 8) and nll["ensemble"].shape == (num_images,)
    for k in ("top", "left", "bottom"):
        assert r[f"bpd_{k}_adversarial"] == pytest.approx(r[f"nll_bits_{k}_adversarial"] / 32)
    assert r["bpd"] == r["bpd_ensemble"] == pytest.approx(r["nll_bits_ensemble"] / 64)


def test_completions_keep_the_observed_pixels(trained):
    workdir, _ = trained
    samples = np.load(os.path.join(workdir, "samples", "samples.npz"))
    truth = rectangles.rectangles(8)[[0, -1]] / 127.5 - 1.0     # evenly spaced: ends
    for half, hidden in orders.half_regions(8, 8).items():
        for kind in ("max_context", "adversarial"):
            x = samples[f"{half}_{kind}"]
            np.testing.assert_array_equal(x[:, ~hidden], truth[:, ~hidden])
            assert set(np.unique(x)) <= {-1.0, 1.0}
        assert os.path.exists(os.path.join(workdir, "samples", f"completions_{half}.png"))
    assert samples["samples"].shape == (2, 8, 8, 1)
