"""Pure diffusion math: schedules, forward process, losses and samplers (no flax modules).

See `schedules` for the notation (0-indexed timesteps as in diffusers).
"""
from fdm.diffusion.losses import (
    DiffusionLossOutput,
    diffusion_loss,
    eps_loss,
    mean_flat,
    reverse_variance,
    sum_flat,
    vlb_weight,
    x0_loss,
)
from fdm.diffusion.process import (
    extract,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    to_x0_and_eps,
)
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
)
from fdm.diffusion.schedules import DiffusionSchedule, make_betas

__all__ = [
    "DiffusionLossOutput", "DiffusionSchedule", "InversionOutput", "SampleOutput", "Trajectory",
    "ancestral_sample", "ancestral_step", "ancestral_timesteps", "ddim_invert", "ddim_sample",
    "ddim_step", "ddim_timesteps", "diffusion_loss", "eps_loss", "extract", "interpolate",
    "make_betas", "mean_flat", "predict_eps_from_x0", "predict_x0_from_eps", "q_posterior",
    "q_sample", "reverse_variance", "sum_flat", "to_x0_and_eps", "vlb_weight", "x0_loss",
]
