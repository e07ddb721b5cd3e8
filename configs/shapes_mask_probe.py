"""The given-mask probe on the main job's data and network (`fdm.models.mask_probe`).

  python -m experiments.main --config=configs/shapes_mask_probe.py --workdir=workdirs/probe_true
  python -m experiments.main --config=configs/shapes_mask_probe.py --workdir=workdirs/probe_uniform \
      --config.model.given_mask_alpha=0
  python -m experiments.main --config=configs/shapes_mask_probe.py --workdir=workdirs/probe_concat \
      --config.model.decoding=concat       # the control: same masks, no factorisation

configs/shapes.py with the decoder fed ground-truth masks (exact by default;
model.given_mask_alpha blends them with uniform masks, model.given_mask_shift
misplaces them by that many pixels) instead of the mask generator's. Compare
eval_loss in results.json across runs: same images, timesteps and noise in each.
"""
from configs import shapes
from configs.fdm_common import given_mask_keys


def get_config():
    c = given_mask_keys(shapes.get_config())   # model.given_mask_alpha / _shift
    c.name = "shapes_mask_probe"
    c.train.mask_prior_steps = 0     # no mask generator runs: nothing to warm-start
    c.train.num_steps = 3000         # the README's probe table
    c.data.num_eval = 2048
    c.eval.num_examples = 2048       # the differences measured are ~3e-3 to 7e-3 of ~0.045
    c.eval.batch_size = 256
    return c
