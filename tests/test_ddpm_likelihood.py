"""DDPM / FDM families with the bound: the vlb loss, learned variances, evaluate's bpd
metrics and rate_distortion.json, the progressive-generation strip, the digits config,
and the bits/dim command on a random-weight diffusers checkpoint with fake TFDS CIFAR-10."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs.fdm_common import ddpm_config, fdm_config
from fdm import data, run
from fdm.diffusion import bpd_loop
from fdm.errors import UserError
from fdm.models import check_config, get_family
from tests import data_fakes, helpers

SIZE = 8
BPD_KEYS = {"bpd", "bpd_prior", "bpd_decoder", "bpd_rate", "distortion_rmse", "bpd_num_examples"}


def tiny(builder=ddpm_config, **diffusion):
    c = builder("lik_test", dataset="shapes", data_dir="", image_size=SIZE, ch=4,
                ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_steps=2,
                batch_size=4)
    c.data.update(dict(num_regions=2, num_train=16, num_eval=6, random_flip=False))
    c.model.num_groups = 2
    c.diffusion.update(dict(num_timesteps=20, beta_end=0.2, **diffusion))
    c.eval.update(dict(num_examples=5, batch_size=4, sampler="ddim", sample_steps=3,
                       sample_stats=False, bpd_examples=5, record_every=2))
    if builder is fdm_config:
        c.eval.segment_t = 3
    return c


def batch(n=4):
    x = np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3)) / 127.5 - 1.0
    return {"image": jnp.asarray(x, jnp.float32)}


def loss_and_grad_norm(family, params):
    def loss(p):
        return family.loss_fn(p, batch(), jax.random.PRNGKey(1), train=True).loss
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), float(optax.global_norm(grads))


@pytest.mark.parametrize("variance", ["fixed_large", "learned", "learned_range"])
def test_vlb_loss_trains_every_variance(variance):
    family = get_family(tiny(loss="vlb", variance=variance))
    params = jax.jit(family.init_params)(jax.random.PRNGKey(0), batch())
    assert family.model.out_ch == (6 if variance.startswith("learned") else 3)
    value, norm = loss_and_grad_norm(family, params)
    assert np.isfinite(value) and value > 0 and np.isfinite(norm) and norm > 0
    for sampler in ("ancestral", "ddim") if variance == "learned" else ():
        out = family.sample_batch(params, jnp.zeros((2, SIZE, SIZE, 3)), jax.random.PRNGKey(2),
                                  sampler=sampler, num_steps=3, progress=False)
        assert out.x0.shape == (2, SIZE, SIZE, 3) and np.isfinite(np.asarray(out.x0)).all()


def test_config_rules_for_the_variance():
    check_config(tiny(loss="vlb", variance="learned"))
    with pytest.raises(UserError, match=r"^diffusion.variance='learned' is invalid.*vlb"):
        check_config(tiny(variance="learned"))
    with pytest.raises(UserError, match=r"^diffusion.variance='learned_range' is invalid"):
        check_config(tiny(fdm_config, loss="vlb", variance="learned_range"))
    check_config(tiny(fdm_config, loss="vlb", variance="fixed_large"))


@pytest.mark.parametrize("builder", [ddpm_config, fdm_config], ids=["ddpm", "fdm"])
def test_evaluate_writes_the_bound_and_table_6_2(tmp_path, builder):
    c = tiny(builder)
    c.eval.num_examples = 4
    family = get_family(c)
    params = jax.jit(family.init_params)(jax.random.PRNGKey(0), batch())
    batches = list(data.make_iterator(c, "eval"))
    metrics = family.evaluate(params, batches, str(tmp_path), jax.random.PRNGKey(3))
    assert BPD_KEYS <= set(metrics) and metrics["bpd_num_examples"] == 5
    assert metrics["bpd"] == pytest.approx(metrics["bpd_rate"] + metrics["bpd_decoder"], rel=1e-5)
    assert all(np.isfinite(metrics[k]) for k in BPD_KEYS)
    table = json.loads((tmp_path / "rate_distortion.json").read_text())
    assert [r[0] for r in table["rows"]] == [20, 18, 16, 14, 12, 10, 8, 6, 4, 2]
    assert table["rows"][0][1] == pytest.approx(metrics["bpd_rate"], rel=1e-5)
    # The same numbers from the library loop on the same images and keys.
    images = np.concatenate([np.asarray(b["image"])[np.asarray(b["valid"])] for b in batches])
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 2), 0)
    fn = jax.tree_util.Partial(family._denoise, params, None)
    ref = bpd_loop(fn, family.schedule, jnp.asarray(images[:4]), key)
    bound = family.bound(params, batches, 5, jax.random.fold_in(jax.random.PRNGKey(3), 2))
    np.testing.assert_allclose(bound.total[:4], ref.total, rtol=1e-5)


@pytest.mark.parametrize("builder", [ddpm_config, fdm_config], ids=["ddpm", "fdm"])
def test_sample_writes_the_progressive_generation_strip(tmp_path, builder):
    c = tiny(builder)
    c.eval.sampler = "ancestral"
    family = get_family(c)
    params = jax.jit(family.init_params)(jax.random.PRNGKey(0), batch())
    family.sample(params, str(tmp_path), jax.random.PRNGKey(4))
    strip = np.asarray(Image.open(tmp_path / "samples" / "progressive.png"))
    rows = min(8, c.eval.num_examples) if builder is fdm_config else 8
    columns = 20 // 2 + 1                                      # x0_hat every 2 steps + sample
    assert strip.shape[:2] == (rows * (SIZE + 2) + 2, columns * (SIZE + 2) + 2)


# ----------------------------------------------------------------------------- digits


def test_digits_loader():
    c = data_fakes.config("digits", "", image_size=8)
    train, test = data_fakes.load(c, "train"), data_fakes.load(c, "eval")
    assert train["image"].shape == (1437, 8, 8, 1) and test["image"].shape == (360, 8, 8, 1)
    levels = np.unique(np.concatenate([train["image"], test["image"]]))
    assert levels[0] == 0 and levels[-1] == 255 and len(levels) == 17
    assert set(np.unique(test["label"])) == set(range(10))
    data_fakes.check_deterministic(c, "eval")
    with pytest.raises(UserError, match="data.image_size=16"):
        data_fakes.load(data_fakes.config("digits", "", image_size=16), "eval")


def test_digits_smoke_config_trains_evaluates_and_samples(tmp_path):
    from configs.ddpm_digits import get_config
    workdir = str(tmp_path / "wd")
    run.run(get_config("smoke"), workdir, "train")         # eval.at_end: evaluate + sample
    results = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert BPD_KEYS <= set(results) and results["bpd_num_examples"] == 12
    assert 0 < results["bpd"] < 20 and results["config"] == "ddpm_digits_smoke"
    assert os.path.exists(os.path.join(workdir, "rate_distortion.json"))
    assert os.path.exists(os.path.join(workdir, "samples", "progressive.png"))


# ----------------------------------------------------------------------------- diffusers


TINY_UNET = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), dropout=0.0,
                 num_classes=0, out_ch=3, num_groups=8)
OVERRIDES = ["--config.model.ch=32", "--config.model.ch_mult=(1,2)",
             "--config.model.num_res_blocks=1", "--config.model.num_groups=8",
             "--config.diffusion.num_timesteps=10", "--config.eval.bpd_examples=3",
             "--config.eval.batch_size=2"]


@pytest.fixture(scope="module")
def diffusers_and_cifar10(tmp_path_factory):
    """(a random-weight diffusers UNet2DModel directory, a fake TFDS cifar10 data_dir)."""
    pytest.importorskip("diffusers")
    from tests.test_convert_diffusers import make_diffusers
    root = tmp_path_factory.mktemp("ddpm_cifar10")
    make_diffusers(TINY_UNET, 32).save_pretrained(str(root / "ddpm-cifar10-32"))
    data_fakes.tfds_cifar10(root / "tfds", num_train=4, num_test=5)
    return str(root / "ddpm-cifar10-32"), str(root / "tfds")


def likelihood_command(*args):
    return subprocess.run([sys.executable, "-m", "experiments.ddpm_likelihood",
                           "--config=configs/ddpm.py", *args], cwd=helpers.REPO,
                          env=helpers.subprocess_env(1), capture_output=True, text=True,
                          timeout=600)


def test_bits_per_dim_command_on_a_diffusers_checkpoint(tmp_path, diffusers_and_cifar10):
    """The README command on a random-weight checkpoint and fake TFDS CIFAR-10; its numbers
    are the library's bound of the converted network on the same test images."""
    unet_dir, tfds_dir = diffusers_and_cifar10
    workdir = tmp_path / "bpd"
    proc = likelihood_command(f"--workdir={workdir}", f"--diffusers={unet_dir}",
                              f"--config.data.data_dir={tfds_dir}", *OVERRIDES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "likelihood.json").read_text())
    assert BPD_KEYS <= set(results) and results["bpd_num_examples"] == 3
    assert results["checkpoint"] == unet_dir and results["step"] == 0
    assert f"bpd={results['bpd']:.5f}" in proc.stdout
    assert (workdir / "rate_distortion.json").exists()

    config = _ddpm_config(tfds_dir)
    expected = run.likelihood(config, str(tmp_path / "again"), unet_dir)   # same in-process
    assert expected["bpd"] == pytest.approx(results["bpd"], rel=1e-5)


def _ddpm_config(tfds_dir):
    """configs/ddpm.py with OVERRIDES (the tiny U-Net of TINY_UNET) and the fake data."""
    from configs.ddpm import get_config
    c = get_config()
    c.data.data_dir = tfds_dir
    c.model.ch, c.model.ch_mult, c.model.num_res_blocks, c.model.num_groups = 32, (1, 2), 1, 8
    c.diffusion.num_timesteps, c.eval.bpd_examples, c.eval.batch_size = 10, 3, 2
    return c


def test_bits_per_dim_command_errors_are_one_line(tmp_path, diffusers_and_cifar10):
    unet_dir, tfds_dir = diffusers_and_cifar10
    for extra, named in ((["--config.model.ch=64"], "model.ch=64"),
                         (["--config.eval.bpd_examples=0"], "eval.bpd_examples"),
                         ([f"--diffusers={tmp_path}/none"], "config.json")):
        args = [f"--workdir={tmp_path / 'wd'}", f"--diffusers={unet_dir}",
                f"--config.data.data_dir={tfds_dir}", *OVERRIDES, *extra]
        proc = likelihood_command(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], proc.stderr


# ----------------------------------------------------------------------------- slow


def digits_oracle(schedule, points):
    """The posterior mean of data uniform on `points` [K, 8, 8, 1] (the train digits)."""
    flat = points.reshape(len(points), -1)

    def fn(x_t, t):
        a = schedule.sqrt_alphas_cumprod[t][:, None]
        b = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
        x = x_t.reshape(len(x_t), -1)
        logits = (x @ flat.T * a - 0.5 * a ** 2 * jnp.sum(flat ** 2, 1)[None]) / b ** 2
        return (jax.nn.softmax(logits, -1) @ flat).reshape(x_t.shape), None
    return jax.tree_util.Partial(fn)


@pytest.mark.slow
def test_digits_trained_on_the_bound_beats_l_simple_and_stays_above_the_oracle(tmp_path):
    """Brief part B, "trained": the small U-Net on the digits, L (with the loss-aware
    t sampler, `ddpm_digits.py:vlb_is`; L with uniform t lost to L_simple, README) vs
    L_simple (2000 steps each, about 5 minutes each on a quiet 2-core CPU): training on
    L gives the lower test
    bpd, and on the train digits each bound is above the oracle's (the posterior mean of
    the train set: the best mean for a fixed variance; the L_0 term is within 0.02 bits).
    DDPM_DIGITS_WORKDIRS=SIMPLE_DIR,VLB_DIR checks two finished runs of the README's
    commands instead of training."""
    from configs.ddpm_digits import get_config
    finished = os.environ.get("DDPM_DIGITS_WORKDIRS", "")
    bpd, train_bpd = {}, {}
    for i, variant in enumerate(("", "vlb_is")):
        c = get_config(variant)
        if finished:
            workdir = finished.split(",")[i]
        else:
            c.train.num_steps = 2000
            workdir = str(tmp_path / (variant or "simple"))
            run.run(c, workdir, "train")
        bpd[variant] = json.loads(open(os.path.join(workdir, "results.json")).read())["bpd"]
        family = get_family(c)
        from fdm.checkpoint_io import restore_ema_params
        params, _ = restore_ema_params(workdir)
        train = data.make_iterator(c, "train", batch_size=120)
        train_bpd[variant] = float(np.mean(family.bound(params, train, 240,
                                                        jax.random.PRNGKey(5)).total))
    points = jnp.asarray(data.load_split_arrays(c, "train")["image"] / 127.5 - 1.0, jnp.float32)
    x0 = next(data.make_iterator(c, "train", batch_size=240))["image"]
    oracle = bpd_loop(digits_oracle(family.schedule, points), family.schedule, x0,
                      jax.random.PRNGKey(5), prediction="x0")
    oracle_bpd = float(np.mean(oracle.total))
    print(f"test bpd: L_simple {bpd['']:.3f}, L {bpd['vlb_is']:.3f}; train bpd: "
          f"{train_bpd['']:.3f} / {train_bpd['vlb_is']:.3f}, oracle {oracle_bpd:.3f} "
          f"(its rate ~ log2(1437) / 64 = {math.log2(1437) / 64:.3f} + its decoder)")
    assert bpd["vlb_is"] < bpd[""]
    assert min(train_bpd.values()) > oracle_bpd - 0.02
