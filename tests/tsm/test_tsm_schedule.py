"""IntervalSchedule and TimestepContext: closed forms, sampling coverage, unset/invalid errors."""

import pytest
import torch

from tsm_video.tsm import ContextError, IntervalSchedule, TimestepContext


def test_interval_index_closed_form_int_and_float():
    sched = IntervalSchedule(1000)
    t = torch.arange(1000)
    for n in (1, 2, 3, 4, 8, 7):
        expect = torch.tensor([ti * n // 1000 for ti in range(1000)])
        assert torch.equal(sched.interval_index(t, n), expect)
        half = t.double() + 0.5
        assert torch.equal(sched.interval_index(half, n), torch.floor(half * n / 1000).long())
    assert sched.interval_index(torch.tensor([1000.0]), 4).tolist() == [3]  # t == T: last interval


def test_from_unit_maps_continuous_time():
    sched = IntervalSchedule(1000)
    u = torch.tensor([0.0, 0.2499, 0.25, 0.999, 1.0])
    assert sched.interval_index(sched.from_unit(u), 4).tolist() == [0, 0, 1, 3, 3]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sched.from_unit(torch.tensor([1.5]))


def test_bounds_partition_timesteps():
    sched = IntervalSchedule(10)
    for n in (1, 3, 4, 10):
        covered = []
        for i in range(n):
            lo, hi = sched.bounds(n, i)
            assert sched.interval_index(torch.arange(lo, hi), n).eq(i).all()
            covered += list(range(lo, hi))
        assert covered == list(range(10))
    with pytest.raises(ValueError, match="out of range"):
        sched.bounds(4, 4)
    with pytest.raises(ValueError, match="scale"):
        sched.bounds(11, 0)


def test_out_of_range_timesteps_raise():
    sched = IntervalSchedule(1000)
    with pytest.raises(ValueError, match=r"\[0, 1000\), got values in \[1000, 1000\]"):
        sched.interval_index(torch.tensor([1000]), 4)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        sched.interval_index(torch.tensor([-1]), 4)
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        sched.interval_index(torch.tensor([float("nan")]), 4)
    with pytest.raises(ValueError, match=r"interval ids must lie in \[0, 4\)"):
        sched.uniform_in(torch.tensor([0, 4]), 4)


@pytest.mark.parametrize("batch,n", [(16, 4), (10, 4), (3, 8), (8, 1)])
def test_stratified_sampling_covers_every_interval(batch, n):
    sched = IntervalSchedule(1000)
    gen = torch.Generator().manual_seed(0)
    t = sched.sample_stratified(batch, n, generator=gen)
    assert t.shape == (batch,) and t.dtype == torch.long and (t >= 0).all() and (t < 1000).all()
    counts = torch.bincount(sched.interval_index(t, n), minlength=n)
    assert counts.min() >= batch // n and counts.max() <= batch // n + 1 and counts.sum() == batch
    again = sched.sample_stratified(batch, n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_stratified_remainders_are_spread_randomly():
    sched = IntervalSchedule(1000)
    gen = torch.Generator().manual_seed(1)
    hits = torch.zeros(4)
    for _ in range(200):
        t = sched.sample_stratified(5, 4, generator=gen)
        hits += torch.bincount(sched.interval_index(t, 4), minlength=4)
    assert (hits - 250).abs().max() < 25  # each interval gets the extra sample about equally often


def test_sample_in_interval_and_uniform():
    sched = IntervalSchedule(1000)
    gen = torch.Generator().manual_seed(0)
    t = sched.sample_in_interval(64, 8, 5, generator=gen)
    assert (sched.interval_index(t, 8) == 5).all()
    u = sched.sample_uniform(4096, generator=gen)
    assert u.min() >= 0 and u.max() < 1000 and u.float().std() > 250


def test_context_caches_until_next_set_and_errors_when_unset():
    ctx = TimestepContext(1000)
    with pytest.raises(ContextError, match=r"ctx.set\(t\)"):
        ctx.intervals(4)
    with pytest.raises(ValueError, match="1-D"):
        ctx.set(torch.tensor(5))
    ctx.set(torch.tensor([0, 300, 999]))
    assert ctx.intervals(4).tolist() == [0, 1, 3]
    assert ctx.expert_ids((4, 2), (0, 4)).tolist() == [[0, 4], [1, 4], [3, 5]]
    assert ctx.single_interval(1) == 0 and ctx.single_interval(4) is None
    assert ctx.intervals(4) is ctx.intervals(4)
    ctx.set(torch.tensor([999.5]))
    assert ctx.intervals(4).tolist() == [3] and ctx.timestep_index().tolist() == [999]
    ctx.clear()
    with pytest.raises(ContextError):
        _ = ctx.t


def test_uniform_in_draws_inside_each_interval_and_checks_ids():
    s = IntervalSchedule(1000)
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 7, 3, 3, 5, 1] * 50)
    t = s.uniform_in(ids, 8, g)
    assert t.dtype == torch.long and torch.equal(s.interval_index(t, 8), ids)
    # one shared interval: the integers of that interval, all reachable (interval 2 of 8: [250, 375))
    shared = s.uniform_in(torch.full((4000,), 2), 8, g)
    assert shared.min() == 250 and shared.max() == 374 and len(shared.unique()) == 125
    with pytest.raises(ValueError, match=r"interval ids must lie in \[0, 8\)"):
        s.uniform_in(torch.tensor([0, 8]), 8, g)


def test_interval_of_a_host_timestep_equals_interval_index():
    """The merged context checks intervals on the host (TimestepContext.set): same arithmetic."""
    s = IntervalSchedule(1000)
    ints = torch.arange(1000)
    floats = torch.cat([torch.linspace(0, 1000, 4001, dtype=torch.float64), torch.tensor([124.99999, 375.0])])
    for n in (1, 3, 7, 8):
        for t in (ints, floats, floats.float()):
            assert [s.interval_of(v, n) for v in t.tolist()] == s.interval_index(t, n).tolist()
    ctx = TimestepContext(1000)
    ctx.pin(8, 7)
    ctx.set(torch.tensor([875.0, 1000.0]))  # t == T belongs to the last interval
    with pytest.raises(ValueError, match="float timesteps must lie in"):
        ctx.set(torch.tensor([900.0, float("nan")]))
    with pytest.raises(ValueError, match="integer timesteps must lie in"):
        ctx.set(torch.tensor([900, 1000]))


@pytest.mark.parametrize("pinned", [False, True])  # min/max of t read at set (merged experts) or later
def test_single_timestep_index_is_the_batch_shared_embedding_row(pinned):
    ctx = TimestepContext(1000)
    if pinned:
        ctx.pin(8, 4)  # interval 4 of 8: t in [500, 625)
    cases = {
        (501, 501): 501,
        (501.25, 501.75): 501,  # float t floored, as timestep_index does
        (501, 502): None,
        (500.0, 524.5): None,
    }
    generation = ctx.generation
    for t, expected in cases.items():
        ctx.set(torch.tensor(t))
        assert ctx.single_timestep_index() == expected
        if expected is not None:
            assert ctx.timestep_index().tolist() == [expected, expected]
    assert ctx.generation == generation + len(cases)
    ctx.clear()
    assert ctx.generation == generation + len(cases) + 1
    with pytest.raises(ContextError):
        ctx.single_timestep_index()
