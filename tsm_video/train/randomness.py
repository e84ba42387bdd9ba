"""The step's random draws: timestep intervals for the stage (the backbone draws ``t`` inside
them), noise, caption dropout — one seeded generator.

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

from tsm_video.models.backbone import Backbone
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
    """How a stage draws its (B,) timesteps: this picks each sample's interval, the backbone's
    :meth:`~tsm_video.models.Backbone.sample_t` draws ``t`` inside it from its training distribution.

    ``stratified`` (fostering): every interval of ``scale`` gets its share of each batch;
    ``interval``: only interval ``interval`` of ``scale`` (the faithful one-interval mode);
    ``uniform``: the plain training distribution (scale 1: base model, vanilla LoRA, assembling).
    """

    mode: Literal["stratified", "uniform", "interval"]
    scale: int = 1
    interval: int | None = None
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.mode == "interval" and (self.interval is None or not 0 <= self.interval < self.scale):
            raise ValueError(f"interval mode needs 0 <= interval < scale={self.scale}, got {self.interval}")

    def intervals(self, batch_size: int, rng: TrainRNG) -> tuple[Tensor, int]:
        """``(ids, scale)``: (B,) long interval ids (CPU) and the scale they index."""
        if self.mode == "stratified":
            schedule = IntervalSchedule(self.num_timesteps)
            return schedule.stratified_intervals(batch_size, self.scale, rng.generator), self.scale
        if self.mode == "interval":
            return torch.full((batch_size,), self.interval, dtype=torch.long), self.scale
        return torch.zeros(batch_size, dtype=torch.long), 1

    def __call__(
        self, batch_size: int, rng: TrainRNG, backbone: Backbone, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) timesteps on ``device``: :meth:`intervals`, then ``backbone.sample_t`` (same generator)."""
        ids, scale = self.intervals(batch_size, rng)
        return backbone.sample_t(ids, scale, rng.generator).to(device)
