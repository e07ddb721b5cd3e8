"""Single-image motion with diffusion through a warp (seed 003 Sec. 4.2, brief T3): random
textures moved by one of four global flows drawn independently of the texture, so the
motion given the context image is uniform over the four. Procedural data, no files.

  python -m experiments.main --config=configs/forward_motion.py --workdir=/tmp/motion
  python -m experiments.main --config=configs/forward_motion.py:deterministic \
      --workdir=/tmp/motion_det

S = (S_c, S_m) (`fdm.forward.motion`): S_c the context frame (16 x 16 x 3), S_m a flow
field; forward(S, phi) = splat(S_c, phi S_m), average softmax splatting (Z = 0, brief
D7; `fdm.forward.splatting`). Tuples (`fdm.data.inverse_toys.motion`): context phi = 0,
target phi = 1 (the texture moved by (+-2, 0) or (0, +-2) pixels), novel view phi = 0.5
(the half-way frame, 1 pixel). The denoiser sees [context, mask, O^trgt_t, mask] and
outputs S_m alone; S = (O^ctxt, S_m). Loss Eq. 8 + Eq. 9 (1 : 1; the paper's edge-aware
flow smoothness is left out: the toy's flows are uniform); x0, cosine T = 1000, O_hat
clipped to [-1, 1], DDIM-50.

Denoiser: `fdm.nn.unet.UNet` (ch 16, ch_mult (1, 2), 1 res block, the middle block
attends at 8 x 8, so the flow can be chosen for the whole frame), out_ch 2; batch 64,
4000 steps at 1e-3 decayed to 5e-5.

Evaluation (eval.at_end): 256 DDIM-50 samples for each of 4 eval contexts, each sample's
mean interior flow binned to the nearest of the four flows or to "still": flow_tv (TV to
the exact 1/4 each; flow_tv_floor what exact samples score), still_fraction,
mean_flow_norm, flow_rmse, flow_tv_max; with the clean target given, over the 256 eval
tuples: given_target_flow_rmse, given_target_accuracy. samples/grid.png: per context
[frame | motion colour] of the context, the true target and 8 sampled warps.

Variants: 'deterministic' the same network from the context alone (the paper: the motion
collapses to ~0, still_fraction ~1, flow_tv ~1); 'smoke' a few steps of a tiny U-Net
(tests).
"""
from configs import variants
from configs.fdm_common import data_config, dfm_config, dfm_smoke


def get_config(variant: str = ""):
    """The diffusion model with Eq. 8 + Eq. 9; variants in the module doc."""
    return variants.apply(_motion(), variant, {"deterministic": _deterministic,
                                               "smoke": _smoke})


def _motion():
    data = data_config("motion", "", 16)
    data.num_train, data.num_eval = 65536, 256
    c = dfm_config("forward_motion", data)
    c.model.forward = "motion"
    c.model.network = "unet"
    c.model.unet.ch, c.model.unet.num_res_blocks = 16, 1
    c.train.num_steps, c.train.batch_size, c.train.lr_final_factor = 4000, 64, 0.05
    c.eval.batch_size, c.eval.num_contexts, c.eval.samples_per_context = 64, 4, 256
    c.eval.num_examples = 4
    return c


def _deterministic(c) -> None:
    c.name = "forward_motion_deterministic"
    c.model.deterministic = True


def _smoke(c) -> None:
    c.name = "forward_motion_smoke"
    dfm_smoke(c, num_eval=8)
    u = c.model.unet
    u.ch, u.ch_mult, u.num_res_blocks, u.num_groups = 8, (1,), 1, 4
    c.eval.batch_size = 8
