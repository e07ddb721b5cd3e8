"""Permanent freezing: a family's `frozen_params()` reach `loss_fn` in every training step
but are not trained parameters: no gradient, no optimizer state, no EMA, not in any
checkpoint, and bit-identical after training (also across a resume)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fdm.models.base import LossOutput
from fdm.train import trainer
from tests import helpers


class TeacherFamily(helpers.TinyFamily):
    """TinyFamily regressing a frozen random 'teacher' map: target = tanh(x W_teacher)."""

    def __init__(self, config):
        super().__init__(config)
        rng = np.random.default_rng(0)
        self.teacher = {"w": rng.normal(size=(16, 16)).astype(np.float32),
                        "scale": np.float32(0.5)}
        self.seen_teacher = []

    def frozen_params(self):
        return {"teacher": self.teacher}

    def loss_fn(self, params, batch, rng, train, step=0):
        if "teacher" not in params:
            raise ValueError("the frozen teacher was not merged into the params")
        self.seen_teacher.append(jax.tree.map(jnp.shape, params["teacher"]))
        x = batch["image"].reshape(-1, 16)
        target = params["teacher"]["scale"] * jnp.tanh(x @ params["teacher"]["w"])
        pred = self._net().apply({"params": params["params"]}, x)
        loss = jnp.mean((pred - target) ** 2)
        return LossOutput(loss=loss, scalars={"mse": loss})


def test_frozen_params_are_used_but_never_trained_or_saved(tmp_path):
    workdir = str(tmp_path / "wd")
    config = helpers.tiny_config()
    family = TeacherFamily(config)
    before = jax.tree.map(np.copy, family.teacher)
    state = trainer.train(config, workdir, family, helpers.tiny_iterator)
    assert int(state.step) == 6 and family.seen_teacher        # the loss read the teacher
    for tree in (state.params, state.ema_params):
        assert set(tree) == {"params"}
    assert "teacher" not in str(jax.tree_util.tree_structure(state.opt_state))
    num_params = len(jax.tree.leaves(state.params))
    adam_moments = [a for a in jax.tree.leaves(state.opt_state) if np.ndim(a) > 0]
    assert len(adam_moments) == 2 * num_params                  # mu and nu of trained params only
    for step in helpers.checkpoint_steps(workdir):
        saved = helpers.load_checkpoint(workdir, step)
        assert "teacher" not in str(jax.tree_util.tree_structure(saved))
    # resume to 9 steps: the same frozen tree, still unchanged
    config.train.num_steps = 9
    state = trainer.train(config, workdir, family, helpers.tiny_iterator)
    assert int(state.step) == 9
    jax.tree.map(np.testing.assert_array_equal, family.teacher, before)
