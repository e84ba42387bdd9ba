"""The step's random draws: timesteps for the stage, noise, caption dropout — one seeded generator.

Every draw goes through one CPU ``torch.Generator`` whose state is saved with the accelerate
state (``register_for_checkpointing``), so a resumed run draws exactly what an uninterrupted
run would have drawn. Draws happen on the CPU (reproducible across devices) and are moved
to the batch's device; each rank seeds its own stream (``seed + 1000 * rank``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tsm_video.tsm import IntervalSchedule

__all__ = ["TrainRNG", "TimestepSampler"]


class TrainRNG:
    """Seeded CPU generator for one rank of one stage; checkpointable (``state_dict``)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise of ``x``'s shape, dtype and device (drawn in float32 on the CPU)."""
        return torch.randn(x.shape, generator=self.generator).to(device=x.device, dtype=x.dtype)

    def keep_mask(self, batch_size: int, drop_prob: float) -> Tensor:
        """(B,) bool, False with probability ``drop_prob`` (caption dropout to the empty prompt)."""
        return torch.rand(batch_size, generator=self.generator) >= drop_prob

    def drop_captions(self, captions: list[str], drop_prob: float) -> list[str]:
        """Replace each caption by "" with probability ``drop_prob`` (classifier-free guidance)."""
        keep = self.keep_mask(len(captions), drop_prob).tolist()
        return [c if k else "" for c, k in zip(captions, keep)]


@dataclass(frozen=True)
class TimestepSampler:
    """How a stage draws its (B,) timesteps.

    ``stratified`` (fostering): every interval of ``scale`` gets its share of each batch;
    ``interval``: only interval ``interval`` of ``scale`` (the faithful one-interval mode);
    ``uniform``: ``t ~ U[0, T)`` (base model, vanilla LoRA, assembling).
    """

    mode: Literal["stratified", "uniform", "interval"]
    scale: int = 1
    interval: int | None = None
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.mode == "interval" and (self.interval is None or not 0 <= self.interval < self.scale):
            raise ValueError(f"interval mode needs 0 <= interval < scale={self.scale}, got {self.interval}")

    def __call__(self, batch_size: int, rng: TrainRNG, device: torch.device | str | None = None) -> Tensor:
        sched = IntervalSchedule(self.num_timesteps)
        g = rng.generator
        if self.mode == "stratified":
            return sched.sample_stratified(batch_size, self.scale, generator=g, device=device)
        if self.mode == "interval":
            return sched.sample_in_interval(batch_size, self.scale, self.interval, generator=g, device=device)
        return sched.sample_uniform(batch_size, generator=g, device=device)
