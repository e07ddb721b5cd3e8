"""FDM on the procedural shapes data: the embedded default and the README's main job.

  python -m experiments.main --config=configs/shapes.py --workdir=workdirs/shapes

Object-centric procedural images (one saturated, patterned object near the
centre on a smooth, paler background; ground-truth masks used only for
evaluation), generated deterministically; no download. `--config.data.style=textured`
is the harder previous style. Sized to train on a quiet 2-core CPU in about 16
minutes (2000 steps at 2.1-2.5 steps/s; docs/FDM_EMERGENCE.md, session 8);
at the end it evaluates (results.json with fg/bg Acc/IoU/DICE, the per-image
diagnostics, mIoU, trivial baselines), samples images with masks and writes the
figures (eval.at_end).
"""
from configs.fdm_common import fdm_config


def get_config():
    c = fdm_config("shapes", dataset="shapes", data_dir="", image_size=32, ch=16,
                   ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                   num_steps=2000, batch_size=16, num_masks=2)
    c.data.style = "object"
    c.data.num_regions = 2
    c.data.num_train = 8192
    c.data.num_eval = 512
    c.data.random_flip = True
    c.model.num_groups = 8
    c.train.learning_rate = 1e-3
    c.train.ema_decay = 0.995
    # Search aid (fdm/models/fdm_search.py; README "What the main job shows"): a warm
    # start of the masks on a centred blob; the mask generator trains at the full
    # learning rate (slowing it to 0.2x, sessions 7-9, only delayed the masks).
    c.train.mask_prior_steps = 300
    c.train.log_every = 50
    c.train.checkpoint_every = 250
    c.train.image_every = 500
    c.eval.num_examples = 32
    c.eval.sampler = "ddim"
    c.eval.sample_steps = 50
    c.eval.record_every = 5
    c.eval.at_end = True
    return c
