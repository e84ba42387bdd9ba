"""The training objective of any backbone as one module, so accelerate (DDP/FSDP) wraps a single forward.

One call, written only with the :class:`~tsm_video.models.Backbone` protocol: pixels →
``encode_pixels`` (posterior sample, frozen) or cached latents → conditioning (through the text
LoRA when it trains) → noise → ``add_noise`` at ``t`` → ``predict`` with TSM layers reading ``t``
→ ``loss`` per sample (B,). The caller draws ``t`` and drops captions; the VAE sample and the
noise come from the same checkpointed generator, in that order; the noise and ``x_t`` are
float32 even under bf16/fp16 autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tsm_video.models.backbone import Backbone, Cond
from tsm_video.train.randomness import TrainRNG

__all__ = ["DiffusionObjective"]


class DiffusionObjective(nn.Module):
    """The backbone's own training loss (ε-, v- or flow-MSE) at given timesteps.

    Args:
        model: the backbone, TSM layers already injected and the stage configured.
        train_text: run the text encoder(s) with gradients (a trainable text LoRA); otherwise
            the conditioning is computed without a graph.
    """

    def __init__(self, model: Backbone, train_text: bool) -> None:
        super().__init__()
        self.model = model
        self.train_text = train_text

    def forward(
        self,
        t: Tensor,
        rng: TrainRNG,
        pixels: Tensor | None = None,
        latents: Tensor | None = None,
        captions: list[str] | None = None,
        cond: Cond | None = None,
        **extras: Any,
    ) -> Tensor:
        """Per-sample loss (B,) float32.

        Args:
            t: (B,) timesteps from ``model.sample_t``.
            rng: the step's generator (VAE posterior sample, then noise).
            pixels: (B, 3, F, H, W) / (B, 3, H, W) in [-1, 1], or ``latents`` already encoded.
            captions: B prompts (caption dropout applied), or ``cond`` from a cache.
            extras: backbone conditioning passed to ``predict`` (VC2: ``fps`` (B,)).
        """
        model = self.model
        if latents is None:
            with torch.no_grad():
                latents = model.encode_pixels(pixels, generator=rng.generator)
        if cond is None:
            with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
                cond = model.encode_text(captions)
        # noise and x_t in float32 whatever the latents' dtype or an enclosing autocast: a bf16
        # noise draw would quantise the very target the model regresses
        noise = rng.randn(tuple(latents.shape), latents.device)
        with torch.autocast(latents.device.type, enabled=False):
            x_t, target = model.add_noise(latents.float(), noise, t)
        return model.loss(model.predict(x_t, t, cond, **extras), target)
