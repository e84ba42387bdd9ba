"""VideoCrafter2's noise schedule: LDM linear betas plus the ``scale_arr`` that shrinks ``x0``.

VC2 (LVDM ``LatentDiffusion`` with ``use_scale=True``) noises a latent as
``x_t = sqrt(acp[t]) * x0 * scale_arr[t] + sqrt(1 - acp[t]) * noise``, where ``scale_arr`` falls
linearly from ``scale_a`` to ``scale_b`` over the first ``mid_step`` timesteps and stays at
``scale_b`` afterwards. With ``fix_scale_bug=False`` (what VC2 trained with) the tail has
``num_timesteps`` entries, so the array is ``mid_step + num_timesteps`` long (1400).

Every table is computed as the official code does (torch float64 ``linspace``, numpy float64
arithmetic) and then cast to float32, so the values equal the checkpoint's buffers bit for bit.
The schedule is a plain object, not an ``nn.Module``: casting a model to bf16 never touches it,
and lookups move the (tiny) table to the device of ``t``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["VC2Schedule", "SCHEDULES", "CHECKPOINT_BUFFERS", "extract"]

# The persistent schedule buffers an official VC2 ``model.ckpt`` carries at its top level.
CHECKPOINT_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)


def extract(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``table[t]`` shaped ``(B, 1, ..., 1)`` with ``ndim`` dims, on ``t``'s device (float32)."""
    if t.dim() != 1:
        raise ValueError(f"timesteps must be a 1-D (B,) tensor, got shape {tuple(t.shape)}")
    values = table.to(t.device)[t.long()]
    return values.reshape(-1, *([1] * (ndim - 1)))  # (B, 1, ..., 1)


class VC2Schedule:
    """VC2 (LVDM) discrete schedule: linear betas ``0.00085 → 0.012`` over 1000 steps, ε-prediction.

    Attributes (float32 CPU tensors): every name in ``CHECKPOINT_BUFFERS`` plus ``alphas``;
    ``scale_arr`` exists only with ``use_scale`` (length ``mid_step + num_timesteps`` unless
    ``fix_scale_bug``).
    """

    name = "vc2"

    def __init__(
        self,
        num_timesteps: int = 1000,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        use_scale: bool = True,
        scale_a: float = 1.0,
        scale_b: float = 0.7,
        mid_step: int = 400,
        fix_scale_bug: bool = False,
    ) -> None:
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
        if not 0.0 < linear_start < linear_end < 1.0:
            raise ValueError(
                f"need 0 < linear_start < linear_end < 1, got linear_start={linear_start}, "
                f"linear_end={linear_end}"
            )
        if use_scale and not 1 < mid_step <= num_timesteps:
            raise ValueError(f"mid_step must be in (1, num_timesteps={num_timesteps}], got {mid_step}")
        self.num_timesteps = int(num_timesteps)
        self.linear_start = float(linear_start)
        self.linear_end = float(linear_end)
        self.use_scale = bool(use_scale)
        self.scale_a, self.scale_b, self.mid_step = float(scale_a), float(scale_b), int(mid_step)
        self.fix_scale_bug = bool(fix_scale_bug)

        # LDM "linear" schedule: torch float64 linspace of sqrt(beta), squared; the rest in numpy float64.
        betas = (
            torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        ).numpy()
        alphas = 1.0 - betas
        acp = np.cumprod(alphas, axis=0)
        acp_prev = np.append(1.0, acp[:-1])
        posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": np.sqrt(acp),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - acp),
            "log_one_minus_alphas_cumprod": np.log(1.0 - acp),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / acp),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / acp - 1),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(acp_prev) / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
        }
        if self.use_scale:
            tail = num_timesteps - mid_step if fix_scale_bug else num_timesteps
            tables["scale_arr"] = np.concatenate(
                (np.linspace(scale_a, scale_b, mid_step), np.full(tail, scale_b))
            )
        for name, value in tables.items():
            setattr(self, name, torch.tensor(value, dtype=torch.float32))

    def checkpoint_buffers(self) -> dict[str, torch.Tensor]:
        """The persistent buffers an official checkpoint stores (names without prefix)."""
        return {name: getattr(self, name) for name in CHECKPOINT_BUFFERS if hasattr(self, name)}

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise ``x0`` (B, ...) to timesteps ``t`` (B,) long; returns ``x_t`` in ``x0``'s dtype.

        ``sqrt(acp[t]) * x0 * scale_arr[t] + sqrt(1 - acp[t]) * noise`` (scale term only with
        ``use_scale``), evaluated in the official order.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        signal = extract(self.sqrt_alphas_cumprod, t, x0.dim()) * x0
        if self.use_scale:
            signal = signal * extract(self.scale_arr, t, x0.dim())
        x_t = signal + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.dim()) * noise
        return x_t.to(x0.dtype)

    def snr(self) -> torch.Tensor:
        """(T,) float64 signal-to-noise ratio of :meth:`q_sample` per timestep:
        ``acp · scale_arr² / (1 − acp)`` (scale term only with ``use_scale``; the first T entries of
        ``scale_arr``, the ones ``q_sample`` reads)."""
        acp = self.alphas_cumprod.double()
        signal = acp * self.scale_arr[: len(acp)].double() ** 2 if self.use_scale else acp
        return signal / (1 - acp)

    def __repr__(self) -> str:
        return (
            f"VC2Schedule(num_timesteps={self.num_timesteps}, linear {self.linear_start}→{self.linear_end}, "
            f"use_scale={self.use_scale}, scale_b={self.scale_b}, mid_step={self.mid_step})"
        )


# Registry of schedules by name (configs pick from here; nothing is imported by string).
SCHEDULES: dict[str, type[VC2Schedule]] = {"vc2": VC2Schedule}
