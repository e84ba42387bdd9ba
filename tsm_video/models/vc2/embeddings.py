"""Sinusoidal timestep/fps embeddings and their MLPs (VC2's ``time_embed`` and ``fps_embedding``)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["embedding_mlp", "timestep_embedding"]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``cat([cos(t f), sin(t f)])`` (cos first), ``f_i = exp(-ln(P) i / half)``.

    Args:
        timesteps: ``(B,)`` integer or float values (cast to float32 here, as the official code does).
        dim: embedding width; an odd ``dim`` gets one trailing zero column.

    Returns:
        ``(B, dim)`` float32.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D (B,), got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def embedding_mlp(dim: int, hidden: int, device=None, dtype=None) -> nn.Sequential:
    """``Linear(dim, hidden) → SiLU → Linear(hidden, hidden)``; children ``0``/``2`` as in the checkpoint."""
    dd = {"device": device, "dtype": dtype}
    return nn.Sequential(nn.Linear(dim, hidden, **dd), nn.SiLU(), nn.Linear(hidden, hidden, **dd))
