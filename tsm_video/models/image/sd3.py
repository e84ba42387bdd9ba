"""Stable Diffusion 3 (MM-DiT, rectified flow), trained with diffusers' SD3 recipe.

diffusers' ``train_dreambooth_lora_sd3.py`` (``weighting_scheme="logit_normal"``, mean 0, std 1):
``u = sigmoid(N(0, 1))``, grid index ``k = floor(u·T)``, ``t = scheduler.timesteps[k]`` of a
``FlowMatchEulerDiscreteScheduler`` at its training grid (``σ`` shifted by ``shift = 3``,
``t = σ·1000`` as a float), ``x_t = (1-σ)·x0 + σ·ε``, target ``ε - x0``, unit loss weights.

**TSM intervals** are defined on that float ``t ∈ [0, 1000]`` (interval ``floor(t·n/1000)``), i.e.
on the shifted ``σ`` the transformer is conditioned on; the sampler's ``t`` lives on the same
axis, so experts follow ``t`` at inference exactly as in training. :meth:`SD3Backbone.sample_t`
draws each interval's share from the training distribution restricted to that interval's σ
range: grid point ``k`` has mass ``p_k = F((k+1)/T) - F(k/T)``, ``F`` the logit-normal CDF, and a
sample of interval ``i`` draws ``k`` with probability ``∝ p_k`` among the grid points in ``i``.
Stratified batches (every interval ``B/n`` samples) therefore re-weight the intervals to equal
shares — the point of stratified fostering — while each interval keeps SD3's own distribution.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tsm_video.models.backbone import Cond
from tsm_video.tsm import IntervalSchedule

from .base import ImageBackbone

__all__ = ["SD3Backbone", "FlowTimesteps"]


class FlowTimesteps:
    """SD3's training timesteps on the flow-matching scheduler's grid, restricted per interval.

    ``grid`` (T,) float32: ``t_k = σ_k·T`` (descending, as ``scheduler.timesteps``); ``mass`` (T,)
    float64: ``p_k``, the probability diffusers' logit-normal draw picks ``k``.
    """

    def __init__(self, scheduler_config: dict, logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.num_timesteps = int(sched.config.num_train_timesteps)
        self.grid = sched.timesteps.float().cpu()  # (T,)
        edges = torch.arange(self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        cdf = torch.special.ndtr((torch.logit(edges) - logit_mean) / logit_std)  # F(0) = 0, F(1) = 1
        self.mass = cdf.diff()  # (T,)
        self._schedule = IntervalSchedule(self.num_timesteps)
        self._ids: dict[int, Tensor] = {}

    def interval_ids(self, scale: int) -> Tensor:
        """Interval (at ``scale``) of every grid point (T,) long."""
        if scale not in self._ids:
            ids = self._schedule.interval_index(self.grid, scale)
            empty = sorted(set(range(scale)) - set(ids.tolist()))
            if empty:
                raise ValueError(
                    f"scale {scale}: intervals {empty[:5]} hold no timestep of the SD3 training "
                    f"grid (its smallest t is {float(self.grid.min()):.3f}); use a coarser scale"
                )
            self._ids[scale] = ids
        return self._ids[scale]

    def sample(self, intervals: Tensor, scale: int, generator: torch.Generator | None) -> Tensor:
        """(B,) interval ids (CPU) → (B,) float32 ``t`` drawn from ``p`` restricted to each interval."""
        if bool(((intervals < 0) | (intervals >= scale)).any()):
            raise ValueError(f"interval ids must lie in [0, {scale}) for scale {scale}")
        ids = self.interval_ids(scale)
        k = torch.empty(intervals.shape, dtype=torch.long)
        for i in torch.unique(intervals).tolist():  # sorted: a fixed draw order for the generator
            rows = intervals == i
            inside = torch.nonzero(ids == i).squeeze(1)
            pick = torch.multinomial(
                self.mass[inside], int(rows.sum()), replacement=True, generator=generator
            )
            k[rows] = inside[pick]
        return self.grid[k]


class SD3Backbone(ImageBackbone):
    """SD3 medium: ``SD3Transformer2DModel`` + CLIP-L, CLIP-G (LoRA-able) and T5-XXL (frozen)."""

    prediction = "flow"
    continuous_time = True
    denoiser_key = "transformer"
    text_keys = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}  # App. A.1: no LoRA on T5
    text_preset = "clip-text-qkvo"  # App. A.1: q_proj, k_proj, v_proj, out_proj of both CLIPs

    def __init__(self, name: str, parts: dict[str, Any]) -> None:
        super().__init__(name, parts)
        self.flow = FlowTimesteps(self.scheduler.config)

    @property
    def pipeline_class(self) -> type:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    @property
    def max_sequence_length(self) -> int:
        return int(self.tokenizer_3.model_max_length)

    def encode_text(self, prompts: list[str]) -> dict[str, Tensor]:
        """B prompts → ``{"prompt_embeds": (B, 77 + L, D), "pooled_prompt_embeds": (B, P)}``
        (the pipeline's ``encode_prompt``: CLIP penultimate states ‖ T5, pooled CLIP-L ‖ CLIP-G)."""
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            list(prompts),
            None,
            None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def sample_t(self, intervals: Tensor, scale: int, generator: torch.Generator | None) -> Tensor:
        """(B,) interval ids → (B,) float32 ``t = σ·1000`` from SD3's logit-normal training
        distribution restricted to each interval (see the module docstring); on ``intervals``' device."""
        return self.flow.sample(intervals.cpu(), scale, generator).to(intervals.device)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``σ = t/T``: ``x_t = (1-σ)·x0 + σ·ε`` (the scheduler's ``scale_noise``), target ``ε - x0``."""
        sigma = (t.double() / self.num_timesteps).to(x0.dtype).view(-1, *[1] * (x0.ndim - 1))
        return (1.0 - sigma) * x0 + sigma * noise, noise - x0

    def _denoise(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        return self.transformer(
            hidden_states=x_t,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
        ).sample

    def _pipeline_kwargs(self, cond: Cond, uncond: Cond, batch: int) -> dict[str, Any]:
        return {
            "prompt_embeds": cond["prompt_embeds"],
            "pooled_prompt_embeds": cond["pooled_prompt_embeds"],
            "negative_prompt_embeds": self._expand(uncond["prompt_embeds"], batch),
            "negative_pooled_prompt_embeds": self._expand(uncond["pooled_prompt_embeds"], batch),
            "max_sequence_length": self.max_sequence_length,
        }
