"""Pure diffusion math: schedules, forward process, reverse process, losses, samplers,
x0-prediction transforms (dynamic thresholding, classifier-free guidance) and the
variational bound in bits/dim (no flax modules). `fdm.diffusion.pdae` (PDAE's shifted
loss, DiffSiam's stage map and segment masks, SimSiam's loss) is a submodule, not
re-exported here.

See `schedules` for the notation (0-indexed timesteps as in diffusers).
"""
from fdm.diffusion.guidance import (
    GuidedDenoiser,
    ThresholdedDenoiser,
    dynamic_threshold,
    guidance_mix,
)
from fdm.diffusion.likelihood import (
    BoundTerms,
    bound_metrics,
    bpd_loop,
    decoder_nll,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bpd,
    rate_distortion_table,
    vb_term_bpd,
)
from fdm.diffusion.losses import (
    DiffusionLossOutput,
    diffusion_loss,
    eps_loss,
    min_snr_weight,
    vlb_weight,
    x0_loss,
)
from fdm.diffusion.process import (
    extract,
    mean_flat,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    sum_flat,
    to_x0_and_eps,
)
from fdm.diffusion.reverse import ReverseStep, p_mean_variance, reverse_variance
from fdm.diffusion.samplers import (
    InversionOutput,
    SampleOutput,
    Trajectory,
    ancestral_sample,
    ancestral_step,
    ancestral_timesteps,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    interpolate,
    renoise_sample,
    renoise_step,
    with_x0_hat,
)
from fdm.diffusion.schedules import DiffusionSchedule, make_betas
from fdm.diffusion.timesteps import (
    LossHistory,
    importance_probs,
    importance_weights,
    init_history,
    record_losses,
    sample_timesteps,
)

__all__ = [
    "BoundTerms", "DiffusionLossOutput", "DiffusionSchedule", "GuidedDenoiser",
    "InversionOutput", "LossHistory", "ReverseStep", "SampleOutput", "ThresholdedDenoiser",
    "Trajectory", "ancestral_sample",
    "ancestral_step", "ancestral_timesteps", "bound_metrics", "bpd_loop", "ddim_invert",
    "ddim_sample", "ddim_step", "ddim_timesteps", "decoder_nll", "diffusion_loss",
    "discretized_gaussian_log_likelihood", "dynamic_threshold", "eps_loss", "extract",
    "guidance_mix", "importance_probs",
    "importance_weights", "init_history", "interpolate", "make_betas", "mean_flat",
    "min_snr_weight",
    "normal_kl", "p_mean_variance", "predict_eps_from_x0", "predict_x0_from_eps",
    "prior_bpd", "q_posterior", "q_sample", "rate_distortion_table", "record_losses",
    "renoise_sample", "renoise_step",
    "reverse_variance", "sample_timesteps", "sum_flat", "to_x0_and_eps", "vb_term_bpd",
    "vlb_weight", "with_x0_hat", "x0_loss",
]
