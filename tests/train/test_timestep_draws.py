"""The trainer picks intervals, the backbone draws ``t``: for VC2 a one-interval or uniform stage
reproduces, draw for draw, the timesteps the trainer drew itself before the protocol (same
generator consumption), and a joint stage draws ``t`` inside the global stratification's ids."""

from __future__ import annotations

import pytest
import torch

from tsm_video.models import build_backbone
from tsm_video.train.randomness import IntervalSampler, TrainRNG
from tsm_video.tsm import IntervalSchedule

VC2 = build_backbone("vc2-tiny", device="meta")  # sample_t needs no weights


@pytest.mark.parametrize(
    ("sampler", "scale", "reference"),
    [
        (
            IntervalSampler("interval", 8, 5, per_device=10),
            8,
            lambda s, g: s.sample_in_interval(10, 8, 5, generator=g),
        ),
        (IntervalSampler("uniform", per_device=10), 1, lambda s, g: s.sample_uniform(10, generator=g)),
    ],
)
def test_vc2_draws_equal_the_interval_schedule_draws(sampler, scale, reference):
    rng = TrainRNG(11)
    ours = torch.cat([VC2.sample_t(sampler(step, 0, 0), scale, rng.generator) for step in range(3)])
    g = torch.Generator().manual_seed(11)
    theirs = torch.cat([reference(IntervalSchedule(1000), g) for _ in range(3)])
    assert torch.equal(ours, theirs)
    assert torch.equal(rng.generator.get_state(), g.get_state())  # same consumption: later draws agree


def test_joint_draws_t_inside_the_stratified_ids():
    sampler = IntervalSampler("stratified", 4, processes=2, accumulation=2, per_device=2, seed=3)
    rng = TrainRNG(0)
    ids = sampler(5, 1, 1)
    t = VC2.sample_t(ids, 4, rng.generator)
    assert torch.equal(IntervalSchedule(1000).interval_index(t, 4), ids)
    assert torch.equal(ids, sampler.step_ids(5)[6:8])  # rank 1, micro-batch 1 of 2 × 2 × 2
    ids, uniform = (
        IntervalSampler("interval", 8, 3, per_device=5)(0, 0, 0),
        IntervalSampler("uniform", per_device=5),
    )
    assert ids.tolist() == [3] * 5 and uniform(0, 0, 0).tolist() == [0] * 5
