"""Test-only pieces for the trainer tests: a tiny model family, its data stream,
subprocess drivers and checkpoint readers.

`TinyFamily` is a 2-layer MLP denoiser on 4x4x1 "images" (one compile takes well
under a second); `tiny_iterator` follows the `fdm.data.make_iterator` contract
(global batch i is a pure function of (data.seed, i); process p gets rows
[p*b, (p+1)*b)). Two test-only data keys exist only in `tiny_config()`:
`data.nan_at_batch` (batch with NaN images, to inject a non-finite loss) and
`data.delay_s` (seconds of sleep per batch, a slow input pipeline for kill tests).

Run as a module, it trains the tiny family in a workdir (used by subprocess tests):
  python -m tests.helpers WORKDIR [train.num_steps=8 data.delay_s=0.05 ...]
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fdm.models.base import LossOutput, ModelFamily

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def jax_cache_dir() -> str:
    """One JAX compilation cache per test session, shared by the child processes: runs
    of the same model on the same devices compile once (the cached executable is the
    very same program, so bit-identity checks are unaffected)."""
    path = tempfile.mkdtemp(prefix="fdm-tests-jax-cache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def tiny_config() -> ml_collections.ConfigDict:
    """Config of the tiny test family (same sections and keys as the real configs)."""
    c = ml_collections.ConfigDict()
    c.name = "tiny_test"
    c.data = ml_collections.ConfigDict(dict(
        image_size=4, seed=0, data_dir="", nan_at_batch=-1, delay_s=0.0))
    c.model = ml_collections.ConfigDict(dict(family="tiny_test", hidden=16,
                                             count_examples=False))
    c.diffusion = ml_collections.ConfigDict(dict(num_timesteps=10))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=6, batch_size=8, learning_rate=1e-2, ema_decay=0.9, seed=0,
        log_every=2, checkpoint_every=3, keep_checkpoints=2, image_every=3, init_from=""))
    c.eval = ml_collections.ConfigDict(dict(num_examples=8))
    return c


class _MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        """x: [B, 16] -> [B, 16]."""
        return nn.Dense(16)(jnp.tanh(nn.Dense(self.hidden)(x)))


class TinyFamily(ModelFamily):
    """Denoise x + 0.1 * noise back to x with an MLP (noise from the step key)."""

    def _net(self):
        return _MLP(self.config.model.hidden)

    def init_params(self, rng, batch):
        return self._net().init(rng, batch["image"].reshape(-1, 16))

    def optimizer(self):
        """Adam with a linearly decaying, injected learning rate (so it gets logged)."""
        tc = self.config.train
        schedule = optax.linear_schedule(tc.learning_rate, tc.learning_rate / 2, tc.num_steps)
        return optax.inject_hyperparams(optax.adam)(learning_rate=schedule)

    def loss_fn(self, params, batch, rng, train, step=0):
        x = batch["image"].reshape(-1, 16)
        noisy = x + 0.1 * jax.random.normal(rng, x.shape)
        pred = self._net().apply(params, noisy)
        loss = jnp.mean((pred - x) ** 2)
        images = {"pred": jnp.clip(pred.reshape(-1, 4, 4, 1)[:2] * 0.5 + 0.5, 0, 1)}
        return LossOutput(loss=loss, scalars={"mse": loss}, images=images)

    def init_stats(self):
        """With model.count_examples: {'seen': examples trained on so far}; else {}."""
        return {"seen": jnp.zeros((), jnp.int32)} if self.config.model.count_examples else {}

    def train_loss(self, params, batch, rng, step, stats):
        out = self.loss_fn(params, batch, rng, train=True, step=step)
        if stats:
            stats = {"seen": stats["seen"] + batch["image"].shape[0]}
        return out, stats

    def evaluate(self, params, batches, workdir, rng):
        losses = [self.loss_fn(params, b, rng, train=False).loss for b in batches]
        return {"train_loss": float(np.mean(losses))}


def _global_batch(config, i: int) -> np.ndarray:
    """Global batch number i: [B, 4, 4, 1] in [-1, 1], a function of (data.seed, i)."""
    rng = np.random.default_rng([config.data.seed, i])
    x = rng.uniform(-1, 1, (config.train.batch_size, 4, 4, 1)).astype(np.float32)
    if i == config.data.nan_at_batch:
        x[:] = np.nan
    return x


def tiny_iterator(config, split, process_index=0, process_count=1,
                  start_step=0) -> Iterator[dict]:
    """Host-local batches {'image': [B / process_count, 4, 4, 1]} from batch start_step."""
    b = config.train.batch_size // process_count
    i = start_step
    while True:
        time.sleep(config.data.delay_s)
        yield {"image": _global_batch(config, i)[process_index * b:(process_index + 1) * b]}
        i += 1


def train_tiny(workdir: str, config=None):
    """Trains TinyFamily in-process; returns the final TrainState."""
    from fdm.train import trainer
    config = config or tiny_config()
    return trainer.train(config, workdir, TinyFamily(config), tiny_iterator)


def train_segmenter(workdir: str, images: np.ndarray, masks: np.ndarray, steps: int = 2):
    """Trains a tiny supervised segmenter (model.family="segmenter", 8-channel one-level
    U-Net) on uint8 images [N, S, S, 3] / int masks [N, S, S] into `workdir` through
    `fdm.train`, as `--baseline=supervised` does; returns the final TrainState."""
    from configs.fdm_common import fdm_config
    from fdm.baselines import common, supervised
    from fdm.train import trainer
    config = fdm_config("segmenter_test", dataset="folder", data_dir="",
                        image_size=images.shape[1], ch=8, ch_mult=(1,), num_res_blocks=1,
                        attn_resolutions=(), num_steps=1, batch_size=2)
    config.model.num_groups = 4
    config.baselines.update(supervised_steps=steps, supervised_batch_size=2,
                            supervised_learning_rate=1e-3)
    config = supervised.segmenter_config(config, supervised.num_classes(masks))
    stream = supervised.train_stream(common.LabelledImages(images, masks))
    return trainer.train(config, workdir, make_iterator=stream)


def apply_overrides(config, overrides: list[str]):
    """'a.b=v' strings -> config with a.b set to v (parsed as the existing key's type)."""
    for item in overrides:
        path, value = item.split("=", 1)
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value)
    return config


def checkpoint_steps(workdir: str) -> list[int]:
    """Finalised checkpoint steps in workdir (directory names that are integers)."""
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def load_checkpoint(workdir: str, step: int | None = None) -> dict:
    """A checkpoint as nested dicts of numpy arrays on this process's first device."""
    from fdm.train.checkpoint import Checkpointer
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        return jax.tree.map(np.asarray, ckpt.restore_tree(sharding, step))
    finally:
        ckpt.close()


def max_abs_diff(a, b) -> float:
    """max |a - b| over all leaves of two pytrees of the same structure."""
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
                         a, b)
    return max(jax.tree.leaves(diffs))


def subprocess_env(num_devices: int = 1) -> dict:
    """Environment for a child python: repo on the path, `num_devices` CPU devices, the
    parent's other XLA flags (tests/conftest.py)."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="1")
    inherited = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(
        inherited + [f"--xla_force_host_platform_device_count={num_devices}"])
    env.update(JAX_COMPILATION_CACHE_DIR=jax_cache_dir(),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def start_tiny(workdir: str, overrides=(), num_devices: int = 1) -> subprocess.Popen:
    """Starts `python -m tests.helpers WORKDIR overrides...`; output goes to WORKDIR.log."""
    log = open(workdir.rstrip("/") + ".log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers", workdir, *overrides], cwd=REPO,
        env=subprocess_env(num_devices), stdout=log, stderr=subprocess.STDOUT)


def run_tiny(workdir: str, overrides=(), num_devices: int = 1, timeout: float = 300) -> str:
    """Runs the tiny training to completion; returns its log (asserts exit code 0)."""
    proc = start_tiny(workdir, overrides, num_devices)
    rc = proc.wait(timeout)
    log = read_log(workdir)
    assert rc == 0, log[-3000:]
    return log


def read_log(workdir: str) -> str:
    """The output of the subprocess that trained in `workdir`."""
    with open(workdir.rstrip("/") + ".log") as f:
        return f.read()


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Polls `predicate()` every 50 ms; fails on timeout or if `proc` exits first."""
    deadline = time.time() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, "process exited before the condition"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


if __name__ == "__main__":
    from absl import logging
    logging.set_verbosity(logging.INFO)
    train_tiny(sys.argv[1], apply_overrides(tiny_config(), sys.argv[2:]))


# ---- the real tiny config through the command line -------------------------------
DDPM_TINY = [
    "--config=configs/ddpm.py:tiny", "--config.model.ch=8", "--config.model.ch_mult=(1,)",
    "--config.model.attn_resolutions=()", "--config.data.image_size=8",
    "--config.data.num_train=16", "--config.data.num_eval=4", "--config.train.batch_size=4",
    "--config.eval.num_examples=4", "--config.eval.batch_size=4",
    "--config.eval.sample_steps=2", "--config.diffusion.num_timesteps=10",
    "--config.train.log_every=1"]


def main_command(*args: str) -> list[str]:
    """`python -m experiments.main ARGS...`"""
    return [sys.executable, "-m", "experiments.main", *args]


def run_main(*args: str, num_devices: int = 1, timeout: float = 400):
    """Runs the command line to completion: CompletedProcess with text stdout/stderr."""
    return subprocess.run(main_command(*args), cwd=REPO, env=subprocess_env(num_devices),
                          capture_output=True, text=True, timeout=timeout)


def forward_family_signal(config):
    """(family, first train batch, initial params, its ObservationTuple, S [B, ...] the
    denoiser predicts at t = 3) of a diffusion-with-forward-models config (`dfm`)."""
    from fdm import data
    from fdm.forward import ObservationTuple
    from fdm.models import get_family
    family = get_family(config)
    batch = next(data.make_iterator(config, "train"))
    params = family.init_params(jax.random.PRNGKey(0), batch)
    views = ObservationTuple.from_batch(batch)
    signal = jax.jit(family.predict_signal)(
        params, views.ctxt, views.trgt.obs, views.trgt.phi,
        jnp.full((views.ctxt.obs.shape[0],), 3, jnp.int32))
    return family, batch, params, views, signal


def run_forward_smoke(config: str, workdir, scores: set, name: str):
    """Trains, evaluates and samples a diffusion-with-forward-models smoke config
    (`configs/forward_*.py:smoke`) through the command line; checks the results name the
    run, hold every key of `scores`, finite, and that the figure exists. Returns
    (results dict, posterior_samples.npz, samples/samples.npz)."""
    proc = run_main(f"--config={config}", f"--workdir={workdir}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert scores <= set(results) and results["config"] == name
    assert np.isfinite([results[k] for k in scores]).all()
    assert os.path.exists(workdir / "samples" / "grid.png")
    return (results, np.load(workdir / "posterior_samples.npz"),
            np.load(workdir / "samples" / "samples.npz"))
