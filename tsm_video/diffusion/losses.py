"""Training objectives: ε-prediction mean squared error (the VC2/LDM ``loss_simple``)."""

from __future__ import annotations

import torch

__all__ = ["eps_mse_loss"]


def eps_mse_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """MSE between predicted and true noise, computed in float32.

    Args:
        pred, target: (B, ...) the model's ε and the noise that made ``x_t``.
        reduction: ``"mean"`` → scalar (mean of per-sample means, equal to the plain mean),
            ``"none"`` → (B,) per-sample means (for logging the loss per timestep interval).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample
