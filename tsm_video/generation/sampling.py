"""Prompts → decoded clips with a backbone (``encode_text`` / ``sample`` / ``decode`` of the protocol).

Reproducibility: each clip has its own CPU ``torch.Generator`` seeded with its clip seed; it
draws the clip's ``x_T`` and then, step by step, the clip's DDIM (``eta > 0``) noise. A clip
therefore depends only on ``(prompt, seed, settings, weights)``, not on the other prompts of
its batch, and CPU-drawn noise makes the starting point the same on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tsm_video.models.backbone import Backbone, StepCallback

from .experts import ExpertSwitcher
from .settings import GenerateSettings

__all__ = ["generate_clips"]


@torch.no_grad()
def generate_clips(
    model: Backbone,
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings: GenerateSettings,
    expert_plan: ExpertSwitcher | None = None,
    *,
    keep_merged: bool = False,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Sample one clip per prompt with the backbone's sampler (VC2: DDIM) + classifier-free
    guidance on ``""``, and decode it.

    Args:
        model: a backbone in eval mode; TSM layers attached or not.
        prompts, seeds: one seed per prompt (see :func:`~tsm_video.generation.prompts.clip_seed`).
        settings: sizes, steps, eta, guidance scale and fps conditioning (see ``Backbone.sample``).
        expert_plan: the adapter's :class:`ExpertSwitcher` (merges the expert of each step's
            interval); ``None`` runs attached experts un-merged, per sample, in the forward.
        keep_merged: leave the last interval merged (the CLI reuses it for the next batch);
            by default ``W0`` is restored before returning.
        on_step: also called as ``on_step(step_index, t)`` before each sampling step (progress).

    Returns:
        clips (B, 3, F, H, W) in ``[-1, 1]`` (float32, on the model's device); images are
        one-frame clips (B, 3, 1, H, W).
    """
    if len(prompts) != len(seeds) or not prompts:
        raise ValueError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
    device = next(model.parameters()).device
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    shape = model.latent_shape(settings)
    x_T = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)  # (B, *shape)
    cond = model.encode_text(list(prompts))  # VC2: (B, L, D)
    uncond = model.encode_text([""])  # batch 1, broadcast by the sampler

    def callback(index: int, t: float) -> None:
        if expert_plan is not None:
            expert_plan(index, t)
        if on_step is not None:
            on_step(index, t)

    try:
        hooks = callback if expert_plan is not None or on_step is not None else None
        z = model.sample(x_T, cond, uncond, settings, generators, callback=hooks)
    finally:
        if expert_plan is not None and not keep_merged:
            expert_plan.close()
    pixels = model.decode(z).float()
    return pixels.unsqueeze(2) if model.modality == "image" else pixels  # an image is a 1-frame clip
