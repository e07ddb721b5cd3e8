"""The Python entry points for a trained model (Colab, notebooks, scripts).

    model = fdm.load("workdirs/shapes")                 # config.json + newest checkpoint
    labels, masks = fdm.segment(model, images_uint8)    # [N,S,S], [N,S,S,K]
    out = model.family.generate(model.params, 16, jax.random.PRNGKey(0))

`load` reads the config saved beside the checkpoints (or takes one), restores
the EMA parameters of the newest checkpoint and builds the model family.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import flax
import jax
import ml_collections
import numpy as np

from fdm.errors import UserError


@flax.struct.dataclass
class TrainedModel:
    """A model family with the EMA parameters of a checkpoint."""
    family: Any = flax.struct.field(pytree_node=False)
    params: Any
    step: int = flax.struct.field(pytree_node=False)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict saved as `workdir/config.json` by training, with the keys added to
    its family since then at their declared defaults (`fdm.models.fill_defaults`)."""
    from fdm.models import fill_defaults
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist; train into {workdir} first "
                        "(python -m experiments.main --mode=train --workdir=...)")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    fill_defaults(config)
    return config


def load(workdir: str, config: Optional[ml_collections.ConfigDict] = None) -> TrainedModel:
    """Family (with what training saved in `workdir`, e.g. a NeRF lifting run's scene
    metadata, so the training data may be gone) + EMA params of the newest checkpoint."""
    from fdm.checkpoint_io import restore_ema_params   # Orbax only when loading
    from fdm.models import get_family
    config = config or load_config(workdir)
    params, step = restore_ema_params(workdir)
    family = get_family(config, workdir)
    family.set_step(step)
    return TrainedModel(family=family, params=params, step=step)


def segment(model: TrainedModel, images, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unsupervised segmentation of uint8 images [N, S, S, 3] with an FDM.

    Returns (labels int32 [N, S, S], soft masks float32 [N, S, S, K]); images are
    noised to t = eval.segment_t (30) and passed once through the model (§2.3.4).
    """
    if not hasattr(model.family, "segment_images"):
        raise UserError(f"model.family={model.family.config.model.family!r} does not "
                        "segment; load an FDM workdir (model.family='fdm')")
    return model.family.segment_images(model.params, images, jax.random.PRNGKey(seed))
