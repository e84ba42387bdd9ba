"""Held-out loss per timestep interval: the same clips, timesteps and noise for every model compared."""

from __future__ import annotations

import torch

from tsm_video.models.backbone import Backbone
from tsm_video.train.data import COND_EXTRAS

__all__ = ["interval_eps_mse"]


@torch.no_grad()
def interval_eps_mse(model: Backbone, batches: list[dict], n: int, seed: int = 0) -> list[float]:
    """Mean training loss (ε-MSE for ε-prediction backbones) in each of the ``n`` intervals of
    ``[0, T)`` over ``batches``.

    Every batch (``pixels``, ``caption`` [B], conditioning extras such as ``fps`` (B,)) is noised
    once per interval with ``t = model.sample_t`` inside that interval; the VAE sample, ``t`` and
    noise come from ``torch.Generator().manual_seed(seed)``, so models evaluated with one seed see
    identical inputs.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    for batch in batches:
        latents = model.encode_pixels(batch["pixels"].to(device), generator=g)
        cond = model.encode_text(list(batch["caption"]))
        extras = {key: batch[key].to(device) for key in COND_EXTRAS if key in batch}
        for i in range(n):
            t = model.sample_t(torch.full((latents.shape[0],), i), n, g).to(device)
            noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
            x_t, target = model.add_noise(latents, noise, t)
            loss = model.loss(model.predict(x_t, t, cond, **extras), target)  # (B,)
            sums[i] += loss.double().sum().cpu()
            counts[i] += loss.numel()
    model.train(was_training)
    return (sums / counts).tolist()
