"""Noise schedules, training objectives and samplers (VC2 first)."""

from tsm_video.diffusion.ddim import DDIMTables, ddim_sample, ddim_step, ddim_tables, ddim_timesteps
from tsm_video.diffusion.losses import eps_mse_loss
from tsm_video.diffusion.schedule import CHECKPOINT_BUFFERS, SCHEDULES, VC2Schedule

__all__ = [
    "CHECKPOINT_BUFFERS",
    "DDIMTables",
    "SCHEDULES",
    "VC2Schedule",
    "ddim_sample",
    "ddim_step",
    "ddim_tables",
    "ddim_timesteps",
    "eps_mse_loss",
]
