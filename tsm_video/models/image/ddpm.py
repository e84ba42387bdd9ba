"""Discrete-time image backbones (integer ``t`` in ``[0, 1000)``): SD1.5 / SD2 (UNet) and
PixArt-α (DiT), trained as diffusers' text-to-image scripts do.

- Noising and targets come from a ``DDPMScheduler`` made from the release's scheduler config
  (``add_noise``; ``get_velocity`` when ``prediction_type`` is ``v_prediction``).
- SD1.5: ε. SD2: ε (``stable-diffusion-2-base``) or v (``stable-diffusion-2``, 768-v), read from
  ``scheduler/scheduler_config.json``.
- PixArt-α predicts ε and a learned variance (8 output channels for 4 latent channels); as in
  diffusers' PixArt training, the variance half is dropped before the MSE (it gets no gradient).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tsm_video.models.backbone import Cond, SamplingSettings
from tsm_video.tsm import IntervalSchedule

from .base import ImageBackbone

__all__ = ["DDPMImageBackbone", "StableDiffusionBackbone", "PixArtAlphaBackbone"]

_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v"}


class DDPMImageBackbone(ImageBackbone):
    """An ε/v-prediction backbone on the release's DDPM schedule."""

    continuous_time = False

    def __init__(self, name: str, parts: dict[str, Any]) -> None:
        from diffusers import DDPMScheduler

        super().__init__(name, parts)
        self.train_scheduler = DDPMScheduler.from_config(self.scheduler.config)
        kind = self.train_scheduler.config.prediction_type
        if kind not in _PREDICTIONS:
            raise ValueError(
                f"{name}: prediction_type {kind!r} is not supported (valid: {list(_PREDICTIONS)})"
            )
        self.prediction = _PREDICTIONS[kind]

    def sample_t(self, intervals: Tensor, scale: int, generator: torch.Generator | None) -> Tensor:
        """(B,) interval ids → (B,) long ``t`` uniform over each interval's integers (diffusers'
        scripts draw ``t ~ U{0, …, T-1}``: scale 1)."""
        t = IntervalSchedule(self.num_timesteps).uniform_in(intervals.cpu(), scale, generator)
        return t.to(intervals.device)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε``; target ``ε`` or ``v = √ᾱ_t ε - √(1-ᾱ_t) x0``."""
        sched = self.train_scheduler
        x_t = sched.add_noise(x0, noise, t)
        target = noise if self.prediction == "eps" else sched.get_velocity(x0, noise, t)
        return x_t, target

    def _sampler_kwargs(self, settings: SamplingSettings) -> dict[str, Any]:
        return {"eta": settings.eta}  # DDIM's eta; other schedulers ignore it


class StableDiffusionBackbone(DDPMImageBackbone):
    """SD1.5 / SD2: ``UNet2DConditionModel`` + CLIP text (last hidden state, 77 tokens)."""

    denoiser_key = "unet"
    text_keys = {"text": "text_encoder"}
    text_preset = "clip-text"  # App. A.1: q_proj, v_proj

    @property
    def pipeline_class(self) -> type:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def _pipeline_parts(self, parts: dict[str, Any]) -> dict[str, Any]:
        return {**parts, "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def encode_text(self, prompts: list[str]) -> Tensor:
        """B prompts → (B, 77, D) CLIP hidden states (the pipeline's ``encode_prompt``; differentiable)."""
        embeds, _ = self.pipeline.encode_prompt(list(prompts), self.device, 1, False)
        return embeds

    def _denoise(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        return self.unet(x_t, t, encoder_hidden_states=cond).sample

    def _pipeline_kwargs(self, cond: Cond, uncond: Cond, batch: int) -> dict[str, Any]:
        return {"prompt_embeds": cond, "negative_prompt_embeds": self._expand(uncond, batch)}


class PixArtAlphaBackbone(DDPMImageBackbone):
    """PixArt-α: ``PixArtTransformer2DModel`` + T5 (120 tokens with attention mask)."""

    denoiser_key = "transformer"
    text_keys = {"t5": "text_encoder"}
    text_preset = "t5-text"  # App. A.1: q, v of T5's self-attention

    @property
    def pipeline_class(self) -> type:
        from diffusers import PixArtAlphaPipeline

        return PixArtAlphaPipeline

    @property
    def max_sequence_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def encode_text(self, prompts: list[str]) -> dict[str, Tensor]:
        """B prompts → ``{"prompt_embeds": (B, L, D), "prompt_attention_mask": (B, L)}``."""
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            device=self.device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def _added_cond(self, x_t: Tensor) -> dict[str, Tensor | None]:
        if not self.transformer.config.use_additional_conditions:
            return {"resolution": None, "aspect_ratio": None}
        b, f = x_t.shape[0], self.vae_scale_factor
        h, w = x_t.shape[-2] * f, x_t.shape[-1] * f
        return {
            "resolution": torch.tensor([[h, w]] * b, dtype=x_t.dtype, device=x_t.device),
            "aspect_ratio": torch.tensor([[h / w]] * b, dtype=x_t.dtype, device=x_t.device),
        }

    def _denoise(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        return self.transformer(
            x_t,
            encoder_hidden_states=cond["prompt_embeds"],
            encoder_attention_mask=cond["prompt_attention_mask"],
            timestep=t,
            added_cond_kwargs=self._added_cond(x_t),
        ).sample

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample ε-MSE (B,) on the first ``C`` output channels: the learned-variance half
        of PixArt's ``2C`` outputs is dropped (diffusers' PixArt training), so it gets no gradient."""
        if pred.shape[1] == 2 * target.shape[1]:
            pred = pred[:, : target.shape[1]]
        return super().loss(pred, target)

    def _pipeline_kwargs(self, cond: Cond, uncond: Cond, batch: int) -> dict[str, Any]:
        return {
            "prompt": None,
            "negative_prompt": None,
            "prompt_embeds": cond["prompt_embeds"],
            "prompt_attention_mask": cond["prompt_attention_mask"],
            "negative_prompt_embeds": self._expand(uncond["prompt_embeds"], batch),
            "negative_prompt_attention_mask": self._expand(uncond["prompt_attention_mask"], batch),
            "use_resolution_binning": False,
            "max_sequence_length": self.max_sequence_length,
        }
