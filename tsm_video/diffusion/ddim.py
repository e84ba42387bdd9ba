"""DDIM sampling exactly as VideoCrafter2's ``DDIMSampler`` (LVDM), with ``scale_arr`` handling.

Facts reproduced (see tests/fixtures/vc2/README.md):

- timesteps ``range(0, T, T // S) + 1`` (ascending; visited in reverse). Like the official
  code, ``len(range(...))`` can exceed ``S`` when ``S`` does not divide ``T`` (S=30 → 31 steps).
- ``alphas_prev[0] = alphas_cumprod[0]`` (not 1); ``sigma = eta * sqrt((1-a_prev)/(1-a) * (1-a/a_prev))``.
- ``pred_x0 = (x - sqrt(1-a) e) / sqrt(a) / scale_t``;
  ``x_prev = sqrt(a_prev) * scale_prev * pred_x0 + sqrt(1 - a_prev - sigma^2) e + sigma * noise``,
  with ``scale_t = scale_arr[t_j]`` and ``scale_prev[0] = scale_arr[0]``.
- classifier-free guidance ``e_u + s (e_c - e_u)``; both branches get the same ``fps``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tsm_video.diffusion.schedule import VC2Schedule

__all__ = ["DDIMTables", "ddim_timesteps", "ddim_tables", "ddim_step", "ddim_sample", "Denoiser"]

# (x (B,C,T,H,W), t (B,) long, context (B,L,D), fps=(B,) long) -> eps (B,C,T,H,W)
Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class DDIMTables:
    """Per-DDIM-index coefficients, ascending (index ``j`` ↔ ``timesteps[j]``); float32, CPU."""

    timesteps: torch.Tensor  # (S,) long
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor
    sigmas: torch.Tensor
    scale: torch.Tensor
    scale_prev: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> torch.Tensor:
    """Uniform DDIM timesteps ``range(0, T, T // steps) + 1`` as a (S,) long tensor, ascending."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_timesteps}], got {steps}")
    return torch.arange(0, num_timesteps, num_timesteps // steps, dtype=torch.long) + 1


def ddim_tables(schedule: VC2Schedule, steps: int, eta: float) -> DDIMTables:
    """The sampler's tables for ``steps`` and ``eta``, computed with the official dtypes."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ts = ddim_timesteps(steps, schedule.num_timesteps)
    if int(ts[-1]) >= schedule.num_timesteps:
        raise ValueError(
            f"{steps} DDIM steps give timestep {int(ts[-1])} >= num_timesteps={schedule.num_timesteps}"
        )
    acp = schedule.alphas_cumprod
    alphas = acp[ts]  # float32
    alphas_prev = torch.cat([acp[:1], acp[ts[:-1]]])  # float32 values; alphas_prev[0] = acp[0]
    # sigma as the official code: (1 - alphas) in float32, the rest in float64, then float32.
    a, a_prev = alphas.double(), alphas_prev.double()
    one_minus_a = (1.0 - alphas).double()
    sigmas = (eta * np.sqrt(((1.0 - a_prev) / one_minus_a * (1.0 - a / a_prev)).numpy())).astype(np.float32)
    if schedule.use_scale:
        scale = schedule.scale_arr[ts]
        scale_prev = torch.cat([schedule.scale_arr[:1], schedule.scale_arr[ts[:-1]]])
    else:
        scale = scale_prev = torch.ones_like(alphas)
    return DDIMTables(
        timesteps=ts,
        alphas=alphas,
        alphas_prev=alphas_prev,
        # numpy float32 sqrt, as the official code (torch's float32 sqrt can differ by one ulp)
        sqrt_one_minus_alphas=torch.from_numpy(np.sqrt((1.0 - alphas).numpy())),
        sigmas=torch.from_numpy(sigmas),
        scale=scale,
        scale_prev=scale_prev,
    )


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    tables: DDIMTables,
    index: int,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update at DDIM index ``index``; returns ``(x_prev, pred_x0)`` (pred_x0 already /scale).

    ``noise`` (same shape as ``x``) is required when ``sigmas[index] > 0``.
    """
    device = x.device
    a_t = tables.alphas[index].to(device)
    a_prev = tables.alphas_prev[index].to(device)
    sigma_t = tables.sigmas[index].to(device)
    sqrt_one_minus_a_t = tables.sqrt_one_minus_alphas[index].to(device)
    pred_x0 = (x - sqrt_one_minus_a_t * eps) / a_t.sqrt()
    dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * eps
    pred_x0 = pred_x0 / tables.scale[index].to(device)
    x_prev = a_prev.sqrt() * tables.scale_prev[index].to(device) * pred_x0 + dir_xt
    if float(tables.sigmas[index]) > 0:
        if noise is None:
            raise ValueError(
                f"DDIM step {index} has sigma {float(tables.sigmas[index]):.4g} > 0: noise needed"
            )
        x_prev = x_prev + sigma_t * noise
    return x_prev, pred_x0


def _guided_eps(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    fps: torch.Tensor,
    guidance_scale: float,
    batched_cfg: bool,
) -> torch.Tensor:
    """ε with classifier-free guidance ``e_u + s (e_c - e_u)`` (one call when unguided)."""
    if uncond is None or guidance_scale == 1.0:
        return denoiser(x, t, cond, fps=fps).to(x.dtype)
    if batched_cfg:
        eps = denoiser(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), fps=torch.cat([fps, fps])
        )
        e_cond, e_uncond = eps.to(x.dtype).chunk(2)  # cond rows first
    else:
        e_cond = denoiser(x, t, cond, fps=fps).to(x.dtype)
        e_uncond = denoiser(x, t, uncond, fps=fps).to(x.dtype)
    return e_uncond + guidance_scale * (e_cond - e_uncond)


def _ddim_noise(
    x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> torch.Tensor:
    """Noise shaped like ``x`` (B, ...): one draw, or row ``k`` from ``generator[k]`` when a sequence."""
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}: give one per sample")
    rows = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator]
    return torch.stack(rows).to(x.device)  # (B, ...)


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    fps: torch.Tensor | int,
    steps: int = 50,
    eta: float = 1.0,
    guidance_scale: float = 12.0,
    schedule: VC2Schedule | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    callback: Callable[[int, int], None] | None = None,
    batched_cfg: bool = False,
) -> torch.Tensor:
    """Run DDIM from ``x_T`` (B,C,T,H,W) and return the final latent (same shape and dtype).

    Args:
        denoiser: ``denoiser(x, t, context, fps=fps) -> eps`` (a VC2UNet or ``VC2Model.predict_noise``).
        cond / uncond: text contexts (B, L, D); ``uncond`` may have batch 1 (broadcast) or be None
            (no guidance). VC2 uses the embedding of ``""`` as ``uncond``.
        fps: (B,) long or an int for every sample; passed to both CFG branches.
        steps, eta, guidance_scale: DDIM settings (VC2 generation: 50, 1.0, 12.0).
        schedule: the training schedule (default ``VC2Schedule()``).
        generator: draws the ``eta > 0`` noise (on its own device), making runs reproducible; a
            sequence of ``B`` generators draws row ``k`` from generator ``k``, so a sample's noise
            does not depend on the batch it is in.
        callback: ``callback(step_index, t)`` before the denoiser runs at that step (expert switch).
        batched_cfg: one denoiser call on ``cat([cond rows, uncond rows])`` instead of two calls.
    """
    schedule = schedule if schedule is not None else VC2Schedule()
    batch = x_T.shape[0]
    if cond.shape[0] != batch:
        raise ValueError(f"cond batch {cond.shape[0]} != latent batch {batch}")
    if uncond is not None:
        if uncond.shape[0] not in (1, batch) or uncond.shape[1:] != cond.shape[1:]:
            raise ValueError(f"uncond shape {tuple(uncond.shape)} does not match cond {tuple(cond.shape)}")
        uncond = uncond.expand_as(cond)
    fps = torch.as_tensor(fps, dtype=torch.long, device=x_T.device).expand(batch).contiguous()  # (B,)
    tables = ddim_tables(schedule, steps, eta)
    x = x_T
    num_steps = len(tables)
    for step_index in range(num_steps):
        index = num_steps - 1 - step_index  # descending timesteps
        t_value = int(tables.timesteps[index])
        if callback is not None:
            callback(step_index, t_value)
        t = torch.full((batch,), t_value, dtype=torch.long, device=x.device)
        eps = _guided_eps(denoiser, x, t, cond, uncond, fps, guidance_scale, batched_cfg)
        noise = _ddim_noise(x, generator) if float(tables.sigmas[index]) > 0 else None
        x, _ = ddim_step(x, eps, tables, index, noise)
    return x
