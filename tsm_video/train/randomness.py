"""The step's random draws: interval ids (the backbone draws ``t`` inside them), noise, caption dropout.

Two sources, both reproducible and resume-safe:

- :class:`TrainRNG`, one CPU ``torch.Generator`` per (run, rank), seeded by :func:`rank_seed` and
  saved with the accelerate state (``register_for_checkpointing``): the timesteps inside each
  sample's interval, the noise, the VAE posterior sample and caption dropout. A resumed run draws
  exactly what an uninterrupted run would have drawn. Draws happen on the CPU (the same on every
  device) and are moved to the batch's device.
- :class:`IntervalSampler`: each sample's interval id. In a ``joint`` fostering run the ids of one
  optimizer step are a function of (run seed, run name, step) only, drawn identically on every rank,
  so the global batch (all ranks × accumulation micro-batches) holds each interval's exact share
  with no communication and no state to checkpoint.

The trainer turns ids into timesteps with the backbone's ``sample_t(ids, scale, generator)``: its
own training distribution restricted to each interval (DDPM backbones: uniform integers inside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from tsm_video.tsm import IntervalSchedule

if TYPE_CHECKING:
    from tsm_video.config import RunConfig
    from tsm_video.train.stages import StageRun

__all__ = ["TrainRNG", "IntervalSampler", "stage_interval_sampler", "rank_seed", "name_seed"]


def name_seed(*words: int | str) -> int:
    """A 63-bit seed from integers and whole strings (every byte counts, in order).

    ``SeedSequence`` mixes its entropy words with a hash, so ``("foster_s12",)`` and
    ``("foster_s21",)`` (equal byte sums) give unrelated seeds; a string enters as its length
    followed by its bytes, so no two different word lists collide by concatenation.
    """
    entropy: list[int] = []
    for w in words:
        if isinstance(w, str):
            data = w.encode()
            entropy += [len(data), *data]
        else:
            entropy.append(int(w) & 0xFFFFFFFFFFFFFFFF)
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def rank_seed(seed: int, rank: int, run_name: str) -> int:
    """The seed of one rank's :class:`TrainRNG` in run ``run_name`` (e.g. ``foster_s8_i3``)."""
    return name_seed(seed, rank, run_name)


class TrainRNG:
    """Seeded CPU generator for one rank of one stage run; checkpointable (``state_dict``)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def randn(self, shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
        """Standard normal float32 noise of ``shape`` (drawn on the CPU, then moved to ``device``)."""
        return torch.randn(shape, generator=self.generator, dtype=torch.float32).to(device)

    def keep_mask(self, batch_size: int, drop_prob: float) -> Tensor:
        """(B,) bool, False with probability ``drop_prob`` (caption dropout to the empty prompt)."""
        return torch.rand(batch_size, generator=self.generator) >= drop_prob

    def drop_captions(self, captions: list[str], drop_prob: float) -> list[str]:
        """Replace each caption by "" with probability ``drop_prob`` (classifier-free guidance)."""
        keep = self.keep_mask(len(captions), drop_prob).tolist()
        return [c if k else "" for c, k in zip(captions, keep)]


@dataclass(frozen=True)
class IntervalSampler:
    """Each sample's interval id at :attr:`scale` for one micro-batch of one rank.

    Modes:

    - ``stratified`` (``joint`` fostering): the step's global batch of
      ``processes × accumulation × per_device`` ids is drawn by ``IntervalSchedule.stratified_intervals``
      (each interval exactly ``G // n`` times) from a generator seeded by ``(seed, step)`` alone —
      the same on every rank — and rank ``r``'s
      micro-batch ``k`` takes slots ``[(r·accumulation + k)·B, … + B)``;
    - ``interval``: every sample in interval :attr:`interval` (a ``per_expert`` run);
    - ``uniform``: scale 1, interval 0, i.e. ``t`` over all of ``[0, T)`` (vanilla LoRA, base,
      assembling, ``joint`` with ``foster_sampling: uniform``).
    """

    mode: Literal["stratified", "interval", "uniform"]
    scale: int = 1
    interval: int = 0
    processes: int = 1
    accumulation: int = 1
    per_device: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode == "interval" and not 0 <= self.interval < self.scale:
            raise ValueError(f"interval mode needs 0 <= interval < scale={self.scale}, got {self.interval}")
        if self.mode == "uniform" and (self.scale, self.interval) != (1, 0):
            raise ValueError("uniform mode draws over all of [0, T): scale 1, interval 0")

    @property
    def global_batch(self) -> int:
        return self.processes * self.accumulation * self.per_device

    def step_ids(self, step: int) -> Tensor:
        """(G,) ids of optimizer step ``step``'s whole global batch (``stratified`` mode)."""
        g = torch.Generator().manual_seed(name_seed(self.seed, step))
        return IntervalSchedule(self.scale).stratified_intervals(
            self.global_batch, self.scale, g
        )  # ids need no T

    def __call__(self, step: int, micro: int, rank: int) -> Tensor:
        """(B,) long ids of rank ``rank``'s micro-batch ``micro`` (0-based) of step ``step`` (0-based)."""
        if self.mode != "stratified":
            return torch.full((self.per_device,), self.interval, dtype=torch.long)
        if not (0 <= rank < self.processes and 0 <= micro < self.accumulation):
            raise ValueError(
                f"rank {rank} / micro-batch {micro} outside {self.processes} processes × "
                f"{self.accumulation} accumulation steps"
            )
        start = (rank * self.accumulation + micro) * self.per_device
        return self.step_ids(step)[start : start + self.per_device]


def stage_interval_sampler(
    cfg: RunConfig, run: StageRun, processes: int, accumulation: int
) -> tuple[IntervalSampler, int]:
    """``(sampler, scale)`` of a stage run; then ``t = backbone.sample_t(ids, scale, generator)``.

    Fostering a scale ``n > 1``: one interval (``per_expert`` run) or every interval with its exact
    share of each global batch (``joint``, ``foster_sampling: stratified``). Everything else
    (vanilla LoRA, base, assembling, ``foster_sampling: uniform``) draws over all of ``[0, T)``.
    """
    per_device = cfg.train.per_device_batch_size
    layout = {"processes": processes, "accumulation": accumulation, "per_device": per_device}
    n = run.scales[0] if run.stage == "foster" else 1
    if run.interval is not None:
        return IntervalSampler("interval", n, run.interval, **layout), n
    if n > 1 and cfg.train.foster_sampling == "stratified":
        return IntervalSampler("stratified", n, seed=name_seed(cfg.run.seed, run.name), **layout), n
    return IntervalSampler("uniform", **layout), 1
