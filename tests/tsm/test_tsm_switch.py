"""Batched interval switches (``SwitchPlan``, used by ``merge_interval`` and ``ExpertSwitcher``):
the same bits as ``layer.merge`` on every layer, a handful of calls per switch, and the layers'
state (merged interval, the context's pins, kept stage-2 outputs) kept as ``merge`` keeps it.

Bit-equality is exact, not a tolerance: both paths run the same float32 operations per element
(``(α/r)·B_i A_i`` by ``bmm``, ``+ W0``, one rounding to the weight's dtype).
"""

import copy
from collections import Counter

import pytest
import torch
from torch import nn

from benchmarks.counts import op_counts
from benchmarks.tiny_models import randomise_adapters
from tsm_video.generation import ExpertSwitcher
from tsm_video.tsm import (
    SwitchPlan,
    TimestepContext,
    TSMConv,
    TSMLinear,
    inject,
    merge_interval,
    tsm_layers,
    unmerge_all,
)

T = 1000


def _stage1_net(dtype: torch.dtype | None) -> tuple[nn.Module, TimestepContext]:
    """Layers of three weight shapes (one a conv), two of each linear shape, all scale 8;
    ``dtype=None``: mixed (bfloat16 and float32 weights of one shape, float32 experts on a
    bfloat16 weight)."""
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    bases = [nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(6, 8), nn.Linear(6, 8), nn.Conv2d(3, 4, 3)]
    dtypes = [dtype] * 5 if dtype is not None else [torch.bfloat16, torch.float32, torch.bfloat16] * 2
    net = nn.ModuleList(
        (TSMConv if isinstance(b, nn.Conv2d) else TSMLinear)(
            b.to(d), ctx, [8], rank=2, dtype=torch.float32 if dtype is None and i == 2 else None
        )
        for i, (b, d) in enumerate(zip(bases, dtypes))
    )
    randomise_adapters(net, torch.Generator().manual_seed(1), scale=1.0)  # as large as W0
    return net, ctx


def _stage2_net(scales: list[int]) -> tuple[nn.Module, TimestepContext]:
    """Two attentions' to_k / to_v (fused shared-input pairs), stage 2 at ``scales``."""
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    net = nn.ModuleList()
    for _ in range(2):
        attn = nn.Module()
        attn.to_k, attn.to_v = nn.Linear(8, 6), nn.Linear(8, 6)
        net.append(attn)
    act = "softmax" if len(scales) > 2 else "sigmoid"
    inject(net, ["to_k", "to_v"], ctx, scales, rank=2, mode="assemble", gate_activation=act)
    randomise_adapters(net, torch.Generator().manual_seed(1), scale=1.0)  # as large as W0
    return net, ctx


def _merged_state(net: nn.Module) -> list[torch.Tensor]:
    """Every tensor a merged forward reads: merged weights and the fused stage-2 buffers."""
    names = ("merged_weight", "fused_weight", "fused_bias", "fused_b", "fused_emb")
    return [t for _, layer in tsm_layers(net) for t in (getattr(layer, n) for n in names) if t is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, None])  # None: mixed dtypes
@pytest.mark.parametrize("chunked", [False, True])  # True: a scratch of one layer's weight
def test_batched_switch_writes_the_bits_of_per_layer_merges(dtype, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(SwitchPlan, "scratch_elements", 1)
    batched, _ = _stage1_net(dtype)
    single = copy.deepcopy(batched)
    plan = SwitchPlan([layer for _, layer in tsm_layers(batched)])
    for interval in (3, 5, 0, 7, 3):
        plan.switch(interval)
        for _, layer in tsm_layers(single):
            layer.merge(interval)
        got, want = _merged_state(batched), _merged_state(single)
        assert len(got) == len(want) == 5 and all(torch.equal(a, b) for a, b in zip(got, want)), interval
    w0 = [layer.base.weight.clone() for _, layer in tsm_layers(batched)]
    for layer in plan.layers:
        layer.unmerge()
    assert all(torch.equal(layer.base.weight, w) for (_, layer), w in zip(tsm_layers(batched), w0))


@pytest.mark.parametrize("scales", [[8, 1], [8, 4, 2, 1]])
def test_batched_stage2_switch_matches_per_layer_and_returns_the_same_outputs(scales):
    batched, ctx = _stage2_net(scales)
    single = copy.deepcopy(batched)
    single_ctx = single[0].to_k.ctx
    x = torch.randn(2, 5, 8)
    outputs = {}
    for interval in (2, 3, 6, 2):  # and back: the same outputs as the first time
        merge_interval(batched, interval)  # through a SwitchPlan kept on the model
        for _, layer in tsm_layers(single):
            layer.merge(interval)
        assert all(torch.equal(a, b) for a, b in zip(_merged_state(batched), _merged_state(single)))
        t = torch.tensor([interval * T // 8 + 5, interval * T // 8 + 90])
        ctx.set(t)
        single_ctx.set(t)
        ys = [m(x) for attn in batched for m in (attn.to_k, attn.to_v)]
        assert all(torch.equal(y, m(x)) for y, m in zip(ys, [m for a in single for m in (a.to_k, a.to_v)]))
        assert all(torch.equal(a, b) for a, b in zip(outputs.setdefault(interval, ys), ys)), interval
    unmerge_all(batched)
    assert "_tsm_switch_plans" not in vars(batched)  # no stacked tables held after unmerging


@pytest.mark.parametrize("scales", [[8, 1], [8, 4, 2, 1]])
def test_a_switch_is_a_handful_of_batched_calls_and_skips_unchanged_context_experts(scales):
    """Per group of one weight shape: bmm, _foreach_add_ (W0), _foreach_copy_ (merged weights);
    the context experts' tables are copied (one more _foreach_copy_) only when they change."""
    net, _ = _stage1_net(torch.float32)
    plan = SwitchPlan([layer for _, layer in tsm_layers(net)])
    plan.switch(0)
    ops = op_counts(lambda: plan.switch(4))
    assert ops == Counter({"aten.bmm": 3, "aten._foreach_add_": 3, "aten._foreach_copy_": 3})
    net, _ = _stage2_net(scales)  # four layers of one shape: one group
    plan = SwitchPlan([layer for _, layer in tsm_layers(net)])
    plan.switch(4)
    ops = op_counts(lambda: plan.switch(5))  # same context experts at every scale < 8
    assert ops == Counter({"aten.bmm": 1, "aten._foreach_add_": 1, "aten._foreach_copy_": 1})
    ops = op_counts(lambda: plan.switch(6))  # [8, 4, 2, 1]: scale 4's expert 2 -> 3
    assert ops["aten._foreach_copy_"] == 1 + (len(scales) > 2)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_a_kept_interval_switches_back_with_one_copy_and_the_same_bits(stage):
    """``keep=True``: each interval is computed once (its first visit), later switches to it
    copy the kept merged weights (one ``_foreach_copy_``, plus the context experts' when they
    change) and write the bits of per-layer merges; ``release`` drops the kept copies."""
    net = _stage1_net(torch.bfloat16)[0] if stage == "stage1" else _stage2_net([8, 4, 2, 1])[0]
    single = copy.deepcopy(net)
    plan = SwitchPlan([layer for _, layer in tsm_layers(net)], keep=True)
    for step, interval in enumerate((3, 5, 0, 3, 5, 0)):
        ops = op_counts(lambda interval=interval: plan.switch(interval))
        for _, layer in tsm_layers(single):
            layer.merge(interval)
        assert all(torch.equal(a, b) for a, b in zip(_merged_state(net), _merged_state(single))), step
        if step >= 3:  # kept: no arithmetic; stage 2 [8, 4, 2, 1] also moves scale 4's context expert
            assert ops == Counter({"aten._foreach_copy_": 1 if stage == "stage1" else 2}), step
        elif step > 0:
            assert ops["aten.bmm"] >= 1, step
    assert sorted(plan._kept) == [0, 3, 5] and all(len(v) == len(plan.layers) for v in plan._kept.values())
    plan.release()
    assert not plan._kept


def test_a_large_group_is_switched_in_chunks_within_the_scratch_cap(monkeypatch):
    """Layers of one shape beyond ``scratch_elements``: one bmm / add / copy per chunk, and the
    scratch holds one chunk (full VC2's largest group: 225 MiB in one piece, 63 MiB in chunks)."""
    net, _ = _stage1_net(torch.float32)  # weights 2 × (6, 8), 2 × (8, 6), a conv's (4, 27)
    monkeypatch.setattr(SwitchPlan, "scratch_elements", 48)  # one linear's weight; the conv's is larger
    plan = SwitchPlan([layer for _, layer in tsm_layers(net)])
    plan.switch(0)
    ops = op_counts(lambda: plan.switch(4))
    assert ops == Counter({"aten.bmm": 5, "aten._foreach_add_": 5, "aten._foreach_copy_": 5})
    assert [rows.shape[0] for *_, rows, _ in plan._groups] == [1] * 5  # one layer per chunk


def test_plan_falls_back_after_layers_change_behind_its_back():
    """A layer switched, unmerged or re-merged on its own: the plan merges per layer and gathers
    again, and the context's pins stay those of the merged intervals."""
    net, ctx = _stage2_net([8, 1])
    layers = [layer for _, layer in tsm_layers(net)]
    plan = SwitchPlan(layers)
    plan.switch(1)
    layers[0].merge(2)  # behind the plan's back
    layers[1].unmerge()
    plan.switch(3)
    assert [layer.merged_interval for layer in layers] == [3] * 4
    ctx.set(torch.tensor([3 * T // 8 + 1]))  # interval 3: allowed
    with pytest.raises(RuntimeError, match="interval 3 of scale 8"):
        ctx.set(torch.tensor([1]))
    reference = copy.deepcopy(net)
    for layer in layers:
        layer.unmerge()
    for _, layer in tsm_layers(reference):
        layer.unmerge()
        layer.merge(3)
    plan.switch(5)
    plan.switch(3)
    assert all(torch.equal(a, b) for a, b in zip(_merged_state(net), _merged_state(reference)))
    for layer in layers:
        layer.unmerge()
    ctx.set(torch.tensor([1, 999]))  # every pin released
    with pytest.raises(ValueError, match="out of range"):
        plan.switch(1)
        plan.switch(8)


def test_expert_switcher_switches_through_one_plan_per_core_scale():
    net, ctx = _stage2_net([8, 1])
    net.tsm_ctx = ctx
    switcher = ExpertSwitcher(net, T)
    switcher(0, 999)
    plan = switcher.plans[8]
    assert plan.current == 7 and plan.layers == [layer for _, layer in tsm_layers(net)]
    ops = op_counts(lambda: switcher(1, 500))
    assert ops["aten.bmm"] == 1 and plan.current == 4
    switcher(2, 999)
    assert op_counts(lambda: switcher(3, 500)) == Counter({"aten._foreach_copy_": 1})  # interval 4 kept
    switcher.close()
    assert all(layer.merged_interval is None for layer in plan.layers) and not plan._groups
    assert not plan._kept
    assert not ExpertSwitcher(net, T, keep_experts=False).plans[8].keep
    switcher(2, 999)  # merges again after close
    assert plan.current == 7 and plan._groups
