"""Per-timestep loss weights ``w(t)`` (``train.loss_weighting``): the trainer minimises the batch mean
of ``w(t) · loss(t)`` instead of the plain mean of the backbone's own loss.

Every weighting is defined relative to the ε-MSE through the signal-to-noise ratio of the
backbone's noising ``x_t = a_t x0 + s_t ε``, ``SNR(t) = a_t² / s_t²`` (VC2:
``a_t = √ᾱ_t · scale_arr[t]``, ``s_t = √(1 − ᾱ_t)``). An x0 error ``δx0`` at ``t`` costs
``SNR(t) · δx0²`` of ε-MSE, so the plain ε-MSE gives almost no weight to what the model gets wrong
about x0 at high ``t`` (VC2's schedule: SNR 0.19 at t = 500, 0.0023 at t = 999):

- ``none``: w = 1 (the backbone's own loss, LVDM's ``loss_simple``);
- ``v``: w = 1 + 1/SNR, the v-MSE expressed on an ε-model (= 1/ᾱ_t without ``scale_arr``); on
  VC2 it puts ~97 % of the weight on t ≥ 500;
- ``min_snr``: w = min(SNR, γ) / SNR, Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training
  via Min-SNR Weighting Strategy", ICCV), ε-prediction form: caps the weight of the low-noise
  steps;
- ``x0_clip``: w = min(1/SNR, γ), the x0-MSE with its weight clipped at γ ("truncated SNR").

The weights are normalised to mean 1 over ``t`` uniform on ``[0, T)``. For a v-prediction
backbone (SD2 768-v), whose loss is already ``v-MSE = ε-MSE / ᾱ_t``, the same ε-relative weights
are applied (times ``SNR / (1 + SNR)``) before the normalisation; flow-matching backbones (SD3) have
no discrete SNR table and refuse a weighting other than ``none``.

Why (docs/training.md, "x0-space loss weighting"): with ε-MSE the demo's base never reads the
direction words; continued with ``v`` it does (the toys within a few hundred steps, the demo base's
recipe after ~7000: ``tsm_video.demo.base``, phase 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tsm_video.config import ConfigError

__all__ = ["LOSS_WEIGHTINGS", "snr_table", "eps_relative_weights", "loss_weights"]

LOSS_WEIGHTINGS = ("none", "v", "min_snr", "x0_clip")


def snr_table(model) -> tuple[Tensor, str]:
    """``(SNR (T,) float64, "eps" | "v")``: the backbone's signal-to-noise ratio per integer
    timestep and what its loss regresses. Raises :class:`ConfigError` for a backbone without a
    discrete variance-schedule table (flow matching)."""
    schedule = getattr(model, "schedule", None)
    if schedule is not None and hasattr(schedule, "snr"):  # VC2 (LVDM's VC2Schedule): ε
        return schedule.snr(), "eps"
    sched = getattr(model, "train_scheduler", None)
    if sched is not None and hasattr(sched, "alphas_cumprod"):  # diffusers DDPM: ε or v
        acp = torch.as_tensor(sched.alphas_cumprod).double()
        return acp / (1 - acp), model.prediction
    raise ConfigError(
        f"config key `train.loss_weighting`: backbone {getattr(model, 'name', type(model).__name__)} "
        "has no discrete noise schedule (flow matching); only `none` applies"
    )


def eps_relative_weights(snr: Tensor, kind: str, gamma: float) -> Tensor:
    """Unnormalised weights (float64, like ``snr``) on the ε-MSE; see the module docstring."""
    if kind == "none":
        return torch.ones_like(snr)
    if kind == "v":
        return 1 + 1 / snr
    if kind == "min_snr":
        return torch.clamp(snr, max=gamma) / snr
    if kind == "x0_clip":
        return torch.clamp(1 / snr, max=gamma)
    raise ConfigError(f"config key `train.loss_weighting`: got {kind!r}; valid: {list(LOSS_WEIGHTINGS)}")


def loss_weights(model, kind: str, gamma: float = 5.0) -> Tensor | None:
    """(T,) float32 weights on the backbone's own per-sample loss, mean 1 over ``t``; None for
    ``none`` (the trainer then takes the plain mean, bit for bit as before)."""
    if kind == "none":
        return None
    snr, target = snr_table(model)
    w = eps_relative_weights(snr, kind, gamma)
    if target == "v":  # v-MSE = ε-MSE · (1 + SNR) / SNR
        w = w * snr / (1 + snr)
    return (w / w.mean()).float()
