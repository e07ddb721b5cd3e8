"""ModelFamily.optimizer: per-subtree learning-rate multipliers (train.lr_multipliers)."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.fdm_common import ddpm_defaults
from fdm import config_rules
from fdm.errors import UserError
from fdm.models.base import ModelFamily
from fdm.models.ddpm import DDPMFamily


class _Family(ModelFamily):
    def init_params(self, rng, batch):
        raise NotImplementedError

    def loss_fn(self, params, batch, rng, train, step=0):
        raise NotImplementedError


def _config(**train):
    """The DDPM defaults at learning rate 1e-2 without clipping, updated with `train`."""
    c = ddpm_defaults()
    c.train.update({"learning_rate": 1e-2, "grad_clip": 0.0, **train})
    return c


def _optimizer(**train):
    return _Family(_config(**train)).optimizer()


PARAMS = {"encoder": {"w": jnp.ones(3)}, "mask_generator": {"w": jnp.ones(3)}}
GRADS = {"encoder": {"w": jnp.full(3, 0.5)}, "mask_generator": {"w": jnp.full(3, 0.5)}}


def _first_update(opt):
    return opt.update(GRADS, opt.init(PARAMS), PARAMS)[0]


def test_multiplier_scales_only_its_subtree():
    plain = _first_update(_optimizer())
    scaled = _first_update(_optimizer(lr_multipliers={"mask_generator": 0.1}))
    # Adam's first step is -lr * sign(g) (up to eps): exactly the scaled rate.
    np.testing.assert_allclose(plain["encoder"]["w"], -1e-2, rtol=1e-5)
    np.testing.assert_allclose(scaled["encoder"]["w"], plain["encoder"]["w"], rtol=1e-6)
    np.testing.assert_allclose(scaled["mask_generator"]["w"], -1e-3, rtol=1e-5)


def test_multiplier_matches_a_separately_built_adam():
    opt = _optimizer(lr_multipliers={"mask_generator": 0.25}, grad_clip=0.3)
    ref = optax.chain(optax.clip_by_global_norm(0.3), optax.adam(2.5e-3))
    got = opt.update(GRADS, opt.init(PARAMS), PARAMS)[0]["mask_generator"]["w"]
    want = ref.update(GRADS, ref.init(PARAMS), PARAMS)[0]["mask_generator"]["w"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_unknown_subtree_is_a_one_line_error():
    with pytest.raises(UserError, match="mask_gen.*mask_generator"):
        _optimizer(lr_multipliers={"mask_gen": 0.1}).init(PARAMS)


def test_frozen_steps_hold_the_subtree_then_release_it():
    opt = _optimizer(frozen_steps={"mask_generator": 2})
    state, params, moved = opt.init(PARAMS), PARAMS, []
    for _ in range(3):
        updates, state = opt.update(GRADS, state, params)
        params = optax.apply_updates(params, updates)
        moved.append((float(updates["encoder"]["w"][0]), float(updates["mask_generator"]["w"][0])))
    assert [m for _, m in moved[:2]] == [0.0, 0.0] and moved[2][1] < 0
    assert all(e < 0 for e, _ in moved)


def _updates(opt, num_steps):
    """The encoder / mask_generator updates of `num_steps` Adam steps on GRADS."""
    state, params, out = opt.init(PARAMS), PARAMS, []
    for _ in range(num_steps):
        updates, state = opt.update(GRADS, state, params)
        params = optax.apply_updates(params, updates)
        out.append((float(updates["encoder"]["w"][0]), float(updates["mask_generator"]["w"][0])))
    return out


def test_warmup_ramps_every_rate_linearly():
    # Adam's step on a constant gradient is -lr (up to eps): the update is the rate.
    moved = _updates(_optimizer(warmup_steps=4, lr_multipliers={"mask_generator": 0.5}), 6)
    np.testing.assert_allclose([e for e, _ in moved], -1e-2 * np.array([1, 2, 3, 4, 4, 4]) / 4,
                               rtol=1e-4)
    np.testing.assert_allclose([m for _, m in moved], -5e-3 * np.array([1, 2, 3, 4, 4, 4]) / 4,
                               rtol=1e-4)


def test_warmup_of_a_frozen_subtree_starts_when_it_is_released():
    moved = _updates(_optimizer(warmup_steps=2, frozen_steps={"mask_generator": 2}), 5)
    np.testing.assert_allclose([m for _, m in moved], [0, 0, -5e-3, -1e-2, -1e-2], rtol=1e-4,
                               atol=1e-12)
    np.testing.assert_allclose([e for e, _ in moved], [-5e-3, -1e-2, -1e-2, -1e-2, -1e-2],
                               rtol=1e-4)


def test_negative_warmup_is_a_one_line_error():
    with pytest.raises(UserError, match="warmup_steps"):
        config_rules.check(_config(warmup_steps=-1), DDPMFamily.config_rules)
