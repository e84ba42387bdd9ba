"""The trainer picks intervals, the backbone draws ``t``: for VC2 this reproduces, draw for draw,
the timesteps the trainer drew itself before the protocol (same generator consumption), so
training runs keep their numerics."""

from __future__ import annotations

import pytest
import torch

from tsm_video.models import build_backbone
from tsm_video.train.randomness import TimestepSampler, TrainRNG
from tsm_video.tsm import IntervalSchedule

VC2 = build_backbone("vc2-tiny", device="meta")  # sample_t needs no weights


@pytest.mark.parametrize(
    ("sampler", "reference"),
    [
        (TimestepSampler("stratified", 4), lambda s, g: s.sample_stratified(10, 4, generator=g)),
        (TimestepSampler("stratified", 3), lambda s, g: s.sample_stratified(2, 3, generator=g)),
        (TimestepSampler("interval", 8, 5), lambda s, g: s.sample_in_interval(10, 8, 5, generator=g)),
        (TimestepSampler("uniform"), lambda s, g: s.sample_uniform(10, generator=g)),
    ],
)
def test_vc2_draws_equal_the_interval_schedule_draws(sampler, reference):
    batch = 2 if sampler.scale == 3 else 10
    rng = TrainRNG(11)
    ours = torch.cat([sampler(batch, rng, VC2) for _ in range(3)])
    g = torch.Generator().manual_seed(11)
    theirs = torch.cat([reference(IntervalSchedule(1000), g) for _ in range(3)])
    assert torch.equal(ours, theirs)
    assert torch.equal(rng.generator.get_state(), g.get_state())  # same consumption: later draws agree


def test_intervals_are_the_stage_intervals():
    ids, scale = TimestepSampler("stratified", 4).intervals(8, TrainRNG(0))
    assert scale == 4 and torch.bincount(ids, minlength=4).tolist() == [2, 2, 2, 2]
    ids, scale = TimestepSampler("interval", 8, 3).intervals(5, TrainRNG(0))
    assert scale == 8 and ids.tolist() == [3] * 5
    ids, scale = TimestepSampler("uniform").intervals(5, TrainRNG(0))
    assert scale == 1 and ids.tolist() == [0] * 5
