"""Held-out ε-MSE per timestep interval: the same clips, timesteps and noise for every model compared."""

from __future__ import annotations

import torch

from tsm_video.diffusion import VC2Schedule, eps_mse_loss
from tsm_video.tsm import IntervalSchedule

__all__ = ["interval_eps_mse"]


@torch.no_grad()
def interval_eps_mse(
    model: torch.nn.Module,
    batches: list[dict],
    n: int,
    seed: int = 0,
    num_timesteps: int = 1000,
) -> list[float]:
    """Mean ε-MSE in each of the ``n`` intervals of ``[0, T)`` over ``batches``.

    Every batch (``pixels`` (B,3,F,H,W), ``caption`` [B], ``fps`` (B,)) is noised once per
    interval with ``t`` drawn inside that interval; the VAE sample, ``t`` and noise come from
    ``torch.Generator().manual_seed(seed)``, so models evaluated with one seed see identical inputs.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    intervals, schedule = IntervalSchedule(num_timesteps), VC2Schedule(num_timesteps)
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    for batch in batches:
        latents = model.encode_video(batch["pixels"].to(device), generator=g)  # (B, 4, F, h, w)
        context = model.encode_text(list(batch["caption"]))  # (B, 77, D)
        fps = batch["fps"].to(device).round().long()
        for i in range(n):
            t = intervals.sample_in_interval(latents.shape[0], n, i, generator=g, device=device)
            noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
            eps = model.predict_noise(schedule.q_sample(latents, t, noise), t, context, fps)
            loss = eps_mse_loss(eps, noise, reduction="none")  # (B,)
            sums[i] += loss.double().sum().cpu()
            counts[i] += loss.numel()
    model.train(was_training)
    return (sums / counts).tolist()
