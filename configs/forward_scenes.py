"""Inverse graphics with diffusion through a forward model (seed 003 Sec. 4.1), sized for a
CPU: random scenes of the toy scene's family (`fdm.data.scene_family`) seen by three
orbit cameras at 16 x 16; the signal is a pixelNeRF conditioned on the context and the
noisy target. Procedural data, no files.

  python -m experiments.main --config=configs/forward_scenes.py --workdir=/tmp/scenes
  python -m experiments.main --config=configs/forward_scenes.py:deterministic \
      --workdir=/tmp/scenes_det

S = the feature maps and cameras of the context and target views and the target's
timestep t [2, 16, 16, 16 + 12 + 1] (`fdm.forward.pixelnerf`); forward(S, phi) = the
field volume-rendered at camera phi (16 bins over [2, 6], white background;
`fdm.forward.scenes`). Tuples (`fdm.data.scene_tuples`): 8192 training scenes, 64 eval
scenes, context / target / novel cameras independent on the orbit. The denoiser (Eq.
13-14): enc a U-Net (ch 16, ch_mult (1, 2), 1 res block; the middle block attends at
8 x 8) with 16 feature channels; the field a ResnetFC of width 32 (1 block per view, the
mean over views, 1 joint block, 6 frequencies, Dense(t-embedding) in every block: brief
D6, model.pixelnerf.time_mlp); O_det rendered with 8 bins and 8 features. Loss Eq. 8 +
Eq. 9 (1 : 1) + L_cond (weight 1; depth smoothness and distortion off: each re-renders
the target and novel views, +35 % per step); x0, cosine T = 1000, O_hat clipped to
[-1, 1], DDIM-50. Batch 8, 2400 steps at 5e-4 decayed to 5e-5, EMA 0.995: 8 GFLOP and
about 0.75 s of one core per step (AMD EPYC, XLA:CPU; 0.86 steps/s measured on a core
shared with another run), about 30 minutes of one free core; the data take about a
minute, the evaluation about eight (32 contexts).

Evaluation (eval.at_end): the eval losses; with the clean target given,
given_target_psnr_ring and given_target(_alone)_rmse_* over the 64 eval tuples; 8
DDIM-50 samples for each of 32 eval contexts: psnr_trgt, psnr_trgt_best, psnr_trgt_mean,
psnr_novel, sample_std_seen, sample_std_unseen, spread_skill_seen, spread_skill_unseen,
rmse_trgt_seen, rmse_trgt_unseen (with the baselines rmse_context_warp_seen and
rmse_mean_image_seen / _unseen, and the geometry diagnostics rmse_depth_warp_seen,
rmse_weights_warp_seen, opacity_seen, opacity_background), unseen_fraction and the
FID-style fd_pixels_trgt (`fdm.forward.scenes`; sessions 17-18 used 4 contexts, before fd_pixels_trgt); the same
scores of the one-step spread at t = 200, 500, 800 (one_step_t{t}_*: the denoiser's S
from the true target noised to t, 8 noise draws per context; `fdm.models.dfm`).
samples/grid.png: per context (the first eval.num_examples) the context view, the true
scene at the 4 ring cameras, 8 samples at them.

model.pixelnerf.image_features stays off: the field reading each view's image at the
projected point moved the seen pixels' RMSE by 0.003 (README, sessions 23-24);
train.opacity_entropy_weight too: at 0.1 it fills empty space with opaque white
(README, session 25).

Variants: 'deterministic' the pixelNeRF baseline (S from the context alone, same
budget); 'hidden_sides' and 'hidden_sides_deterministic' the two on the same scenes
with their far sides repainted (data.hidden_sides: colours the context cannot know, so
the exact posterior there is the colour prior and the samples' spread has a known
answer, prior_std_hidden; `fdm.data.scene_tuples`); 'smoke' a few steps of a tiny model
on 8 x 8 views (tests).
"""
from configs import variants
from configs.fdm_common import data_config, dfm_config, dfm_smoke


def get_config(variant: str = ""):
    """The diffusion model with Eq. 8 + Eq. 9 + L_cond; variants in the module doc."""
    return variants.apply(_scenes(), variant, {
        "deterministic": _deterministic, "hidden_sides": _hidden_sides,
        "hidden_sides_deterministic": _hidden_sides_deterministic,
        "smoke": _smoke})


def _scenes():
    data = data_config("scene_tuples", "", 16)
    data.num_train, data.num_eval, data.hidden_sides = 8192, 64, False
    c = dfm_config("forward_scenes", data)
    c.model.forward = "scenes"
    c.model.network = "pixelnerf"
    c.model.unet.ch, c.model.unet.num_res_blocks = 16, 1
    p = c.model.pixelnerf
    p.features, p.det_features, p.width, p.view_blocks, p.joint_blocks = 16, 8, 32, 1, 1
    p.num_samples, p.det_samples = 16, 8
    c.train.num_steps, c.train.batch_size = 2400, 8
    c.train.learning_rate, c.train.lr_final_factor = 5e-4, 0.1
    c.train.ema_decay = 0.995                # half-life 140 steps: 0.999 lags a short run
    c.train.cond_weight = 1.0
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 50, 500, 1000
    c.eval.batch_size, c.eval.num_contexts, c.eval.samples_per_context = 16, 32, 8
    c.eval.num_examples = 4
    c.eval.one_step_t = (200, 500, 800)
    return c


def _deterministic(c) -> None:
    c.name = c.name.replace("forward_scenes", "forward_scenes_deterministic")
    c.model.deterministic = True


def _hidden_sides(c) -> None:
    c.name = "forward_scenes_hidden_sides"
    c.data.hidden_sides = True


def _hidden_sides_deterministic(c) -> None:
    _hidden_sides(c)
    _deterministic(c)


def _smoke(c) -> None:
    c.name = "forward_scenes_smoke"
    dfm_smoke(c, num_eval=8)
    c.data.image_size, c.data.num_train = 8, 8
    c.train.num_steps, c.train.checkpoint_every = 1, 1
    u = c.model.unet
    u.ch, u.ch_mult, u.num_res_blocks, u.num_groups = 8, (1,), 1, 4
    p = c.model.pixelnerf
    p.features, p.det_features, p.width, p.view_blocks, p.joint_blocks = 4, 2, 8, 1, 0
    p.num_freqs, p.num_samples, p.det_samples = 2, 4, 2
    c.eval.batch_size, c.eval.num_contexts, c.eval.samples_per_context = 8, 2, 2
    c.eval.one_step_t = (10,)
