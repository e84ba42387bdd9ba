"""The VC2 training objective as one module, so accelerate (DDP/FSDP) wraps a single forward.

One call: pixels → VAE latents (posterior sample, frozen) or cached latents → noise at ``t``
with VC2's ``scale_arr`` (``VC2Schedule.q_sample``) → text context (through the text LoRA when
it trains) → ε prediction with TSM layers reading ``t`` → per-sample ε-MSE (B,). The caller
draws ``t`` and drops captions; the noise comes from the same checkpointed generator and, like
``x_t``, is float32 even under bf16/fp16 autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tsm_video.diffusion import VC2Schedule, eps_mse_loss
from tsm_video.train.randomness import TrainRNG

__all__ = ["DiffusionObjective"]


class DiffusionObjective(nn.Module):
    """ε-MSE of a VC2-protocol model (``encode_video``, ``encode_text``, ``predict_noise``).

    Args:
        model: the backbone (``VC2Model``), TSM layers already injected and the stage configured.
        schedule: the noise schedule (VC2: linear betas + ``scale_arr``).
        train_text: run the text encoder with gradients (a trainable text LoRA); otherwise
            the context is computed without a graph.
    """

    def __init__(self, model: nn.Module, schedule: VC2Schedule, train_text: bool) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.train_text = train_text

    def forward(
        self,
        t: Tensor,
        fps: Tensor,
        rng: TrainRNG,
        pixels: Tensor | None = None,
        latents: Tensor | None = None,
        captions: list[str] | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Per-sample loss (B,) float32.

        Args:
            t: (B,) long timesteps in [0, T).
            fps: (B,) frame rate of each clip (conditioning; rounded to integers as VC2 does).
            rng: the step's generator (VAE posterior sample and noise).
            pixels: (B, 3, F, H, W) in [-1, 1], or ``latents`` (B, 4, F, h, w) already scaled.
            captions: B prompts (caption dropout applied), or ``context`` (B, L, D) from a cache.
        """
        if latents is None:
            with torch.no_grad():
                latents = self.model.encode_video(pixels, generator=rng.generator)  # (B, 4, F, h, w)
        if context is None:
            with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
                context = self.model.encode_text(captions)  # (B, 77, D)
        # noise and x_t in float32 whatever the latents' dtype or an enclosing autocast: a bf16
        # noise draw would quantise the very target the model regresses
        noise = rng.randn(tuple(latents.shape), latents.device)
        with torch.autocast(latents.device.type, enabled=False):
            x_t = self.schedule.q_sample(latents.float(), t, noise)  # (B, 4, F, h, w) float32
        eps = self.model.predict_noise(x_t, t, context, fps.round().long())
        return eps_mse_loss(eps, noise, reduction="none")
