"""Merging experts for inference: W0 restored bit-exactly, state-free merged forwards, and the
precomputed stage-2 path equal to the per-sample (training) path.

Tolerances: a merged layer computes ``(W0 + ΔW)·x`` where the training path computes
``W0·x + B(A x)``, and the stage-2 path applies ``α/r`` to ``B`` instead of to ``A x``; both
only reorder float32 sums of at most ``in + k·r`` (≤ 20 here) products, so the outputs agree
to 64 float32 ulps of the output magnitude.
"""

import pytest
import torch
from torch import nn

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
EPS32 = torch.finfo(torch.float32).eps


@torch.no_grad()
def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=64 * EPS32 * float(b.abs().max()))


def _layer(scales, mode="foster", act="none", dtype=torch.float32, width=8, seed=0):
    torch.manual_seed(seed)
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(width, width).to(dtype), ctx, scales, rank=2, mode=mode, gate_activation=act)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # experts and router well off zero, as big as W0
        for name, p in layer.named_parameters():
            if not name.startswith("base."):
                p.copy_(torch.randn(p.shape, generator=gen))
    return layer, ctx


def delta(layer, i):
    """``(α/r)·B_i A_i`` of core expert ``i`` in float32."""
    core = layer.scales[0]
    return layer.scaling * layer.lora_B[f"s{core}"][i].float() @ layer.lora_A[f"s{core}"][i].float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_thousands_of_merge_cycles_restore_w0_bit_exactly(dtype):
    layer, ctx = _layer([8], dtype=dtype)
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(2, 3, 8, dtype=dtype)
    ctx.set(torch.tensor([0, 999]))
    y0 = layer(x)  # unmerged, per-sample experts
    merged = {}  # interval -> (merged weight, merged output) the first time
    order = torch.randint(0, 8, (3000,), generator=torch.Generator().manual_seed(0)).tolist()
    for step, i in enumerate(order):
        layer.merge(i)  # switches without unmerging in between ...
        w, y = merged.setdefault(i, (layer.merged_weight.clone(), layer(x)))
        assert torch.equal(layer.merged_weight, w), (step, i)  # ... and land on the same bits
        if step % 3 == 0:
            layer.unmerge()
            assert torch.equal(layer.base.weight, w0) and layer.merged_weight is None, step
    assert all(torch.equal(layer.merge(i) or layer(x), y) for i, (_, y) in merged.items())
    layer.unmerge()
    ctx.set(torch.tensor([0, 999]))
    assert torch.equal(layer(x), y0) and torch.equal(layer.base.weight, w0)
    ulp = torch.finfo(dtype).eps * (w0.float().abs() + delta(layer, 5).abs())  # one rounding of W0 + ΔW
    assert ((merged[5][0].float() - (w0.float() + delta(layer, 5))).abs() <= ulp).all()
    if dtype != torch.float32:  # what the test guards against: add-then-subtract drifts in low precision
        naive = w0.clone()
        for i in order[:100]:
            d = delta(layer, i).to(dtype)
            naive += d
            naive -= d
        assert not torch.equal(naive, w0)


def test_model_level_cycles_restore_w0_bit_exactly():
    net = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6)).to(torch.bfloat16)
    ctx = TimestepContext(T)
    for i in range(2):
        net[i] = TSMLinear(net[i], ctx, [8, 4, 2, 1], rank=2, mode="assemble")
        with torch.no_grad():
            net[i].lora_B["s8"].normal_()
    w0 = [layer.base.weight.clone() for _, layer in tsm_layers(net)]
    for cycle in range(500):
        merge_interval(net, cycle % 8)
        merge_interval(net, (cycle * 5) % 8)
        unmerge_all(net)
    assert all(torch.equal(layer.base.weight, w) for (_, layer), w in zip(tsm_layers(net), w0))


@pytest.mark.parametrize("mode,scales", [("foster", [4]), ("assemble", [4, 2])])
@pytest.mark.parametrize("conv", [False, True])
def test_merged_layer_equals_unmerged_and_switches(mode, scales, conv):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    base = nn.Conv1d(6, 4, 3, padding=1) if conv else nn.Linear(6, 4)
    layer = (TSMConv if conv else TSMLinear)(base, ctx, scales, rank=2, mode=mode)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "lora_B" in name or "router" in name:
                p.normal_()
    x = torch.randn(2, 6, 5) if conv else torch.randn(2, 5, 6)
    cases = {1: torch.tensor([260, 400]), 3: torch.tensor([800, 900])}  # both samples in the interval
    refs = {}
    for interval, t in cases.items():
        ctx.set(t)
        refs[interval] = layer(x)
    for interval, t in cases.items():
        layer.merge(interval)  # the second pass switches 1 -> 3
        assert layer.merged_interval == interval
        ctx.set(t)
        close(layer(x), refs[interval])
    layer.unmerge()
    assert layer.merged_interval is None and torch.equal(layer(x), refs[3])


def test_merged_context_refuses_other_intervals_once_per_forward():
    layer, ctx = _layer([4])
    layer.merge(1)
    with pytest.raises(RuntimeError, match=r"interval 1 of scale 4 are merged.*intervals 1\.\.3"):
        ctx.set(torch.tensor([260, 900]))
    ctx.set(torch.tensor([260, 499]))  # inside interval 1
    layer.merge(3)  # switching moves the pin
    with pytest.raises(RuntimeError, match="interval 3 of scale 4"):
        ctx.set(torch.tensor([260]))
    layer.unmerge()
    ctx.set(torch.tensor([260, 900]))  # nothing merged: mixed batches are fine again
    with pytest.raises(RuntimeError, match="without a matching pin"):
        ctx.unpin(4, 1)


@pytest.mark.parametrize("conv", [False, True])
def test_merged_stage1_layer_is_one_base_sized_call(conv):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    base = nn.Conv2d(3, 4, 3, padding=1) if conv else nn.Linear(8, 4)
    layer = (TSMConv if conv else TSMLinear)(base, ctx, [8], rank=2)
    x = torch.randn(2, 3, 5, 5) if conv else torch.randn(3, 4, 8)
    layer.merge(2)
    assert layer.forward == layer._forward_merged  # bound at merge: nothing checked per call
    ctx.clear()  # and no context read
    reference = nn.Conv2d(3, 4, 3, padding=1) if conv else nn.Linear(8, 4)
    reference.load_state_dict({"weight": layer.merged_weight, "bias": base.bias})
    assert torch.equal(layer(x), reference(x))
    layer.unmerge()
    assert "forward" not in vars(layer)


def test_merge_refuses_non_finite_and_moe():
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(4, 4), ctx, [2], rank=2)
    with torch.no_grad():
        layer.lora_B["s2"][0, 0, 0] = float("nan")
    w0 = layer.base.weight.clone()
    with pytest.raises(ValueError, match="not finite"):
        layer.merge(0)
    assert layer.merged_interval is None and torch.equal(layer.base.weight, w0)
    with pytest.raises(RuntimeError, match="no core expert"):
        TSMLinear(nn.Linear(4, 4), ctx, [2, 1], mode="moe").merge(0)


@pytest.mark.parametrize("act", ["none", "softmax", "sigmoid"])
def test_stage2_precomputed_path_equals_per_sample_path(act):
    """Samples of one interval at different t (own Emb(t) rows), every interval, in place."""
    layer, ctx = _layer([8, 4, 2, 1], mode="assemble", act=act)
    x = torch.randn(2 * 3, 5, 8)  # (b f) tokens c
    cases = [torch.tensor([i * T // 8 + 3, i * T // 8 + 120]) for i in range(8)]
    refs = []
    for t in cases:
        ctx.set(t)
        refs.append(layer(x))  # unmerged: per-sample experts, core included
    weight = None
    for interval, (t, ref) in enumerate(zip(cases, refs)):
        layer.merge(interval)
        group = layer.input_group
        assert layer.forward == layer._forward_fused and group.members == [layer]
        weight = weight if weight is not None else group.weight
        assert group.weight is weight and layer.merged_weight.data_ptr() == weight.data_ptr()  # in place
        ctx.set(t)
        close(layer(x), ref)
    layer.unmerge()
    assert layer.fused_tables_a is None and group.weight is None and "forward" not in vars(layer)


def _pair(act, bias=False, seed=0, scales=(8, 4, 2, 1)):
    """to_k / to_v of one attention (rank 2), experts and router off zero."""
    torch.manual_seed(seed)
    ctx = TimestepContext(T)
    attn = nn.Module()
    attn.to_k, attn.to_v = nn.Linear(8, 6, bias=bias), nn.Linear(8, 6, bias=bias)
    inject(attn, ["to_k", "to_v"], ctx, list(scales), rank=2, mode="assemble", gate_activation=act)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if not name.endswith("base.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
    return attn, ctx


@pytest.mark.parametrize(
    "scales, act",
    [((8, 1), "none"), ((8, 1), "sigmoid"), ((8, 4, 2, 1), "none"), ((8, 4, 2, 1), "softmax")]
    + [((8, 4, 2, 1), "sigmoid")],
)
@pytest.mark.parametrize("t", [[700], [626, 740], [700, 700]])  # one t (its Emb row read on the host), two
def test_stage2_shared_input_pair_equals_per_sample_path(scales, act, t):
    """to_k and to_v share one group: one fused product for both, each output equal to the
    per-sample path's; to_v returns what to_k's call computed for the same input. One context
    expert (the recipes' [8, 1]) and three; a batch at one timestep and at two."""
    attn, ctx = _pair(act, bias=True, scales=scales)
    group = attn.to_k.input_group
    assert group is attn.to_v.input_group and group.members == [attn.to_k, attn.to_v]
    t = torch.tensor(t)
    x = torch.randn(len(t) * 3, 5, 8)
    ctx.set(t)
    refs = attn.to_k(x), attn.to_v(x)
    merge_interval(attn, 5)
    ctx.set(t)
    k = attn.to_k(x)
    kept = group._kept[3][1]
    v = attn.to_v(x)
    assert v is kept and group._kept[3] == [None, None]  # computed once, handed over once
    close(k, refs[0])
    close(v, refs[1])
    assert v.shape == (len(t) * 3, 5, 6) and v.view(-1, 6).shape == (len(t) * 15, 6)  # column views


def test_stage2_pair_recomputes_for_another_input_version_or_timestep():
    attn, ctx = _pair("none")
    merge_interval(attn, 2)
    x, y = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    ctx.set(torch.tensor([300]))
    ref_v = attn.to_v(y)  # to_v first: computes the group, keeps to_k's output for y
    attn.to_k(y)
    attn.to_k(x)
    close(attn.to_v(y), ref_v)  # kept for x, asked for y: computed afresh
    attn.to_k(x)
    x.add_(1.0)  # the same tensor, changed in place: its kept output is stale
    ctx.set(torch.tensor([300]))
    unfused = attn.to_v.input_group._compute(x)[1]
    attn.to_k(x)
    ctx.set(torch.tensor([310]))  # a new set: other Emb(t) rows
    out = attn.to_v(x)
    assert torch.equal(out, attn.to_v.input_group._compute(x)[1])
    assert not torch.equal(out, unfused)


def test_stage2_pair_recomputes_after_a_switch():
    """Outputs kept for to_v are dropped when the experts change, even with the same input and t."""
    attn, ctx = _pair("none", scales=(8, 1))
    group, x = attn.to_k.input_group, torch.randn(2, 5, 8)
    merge_interval(attn, 2)
    ctx.set(torch.tensor([300]))
    attn.to_k(x)
    stale = group._kept[3][1]  # to_v's output with interval 2's experts
    merge_interval(attn, 3)  # same x, no new ctx.set: only the merged experts changed
    out = attn.to_v(x)
    assert torch.equal(out, group._compute(x)[1]) and not torch.allclose(out, stale)


def test_stage2_pair_with_one_member_merged():
    """Members merge and unmerge on their own; the group's buffers live while any is merged."""
    attn, ctx = _pair("none")
    x, t = torch.randn(2, 5, 8), torch.tensor([900])
    ctx.set(t)
    refs = attn.to_k(x), attn.to_v(x)
    attn.to_v.merge(7)
    ctx.set(t)
    close(attn.to_k(x), refs[0])  # unmerged: per-sample path
    close(attn.to_v(x), refs[1])
    attn.to_k.merge(7)
    attn.to_v.unmerge()
    ctx.set(t)
    close(attn.to_k(x), refs[0])
    close(attn.to_v(x), refs[1])
    attn.to_k.unmerge()
    assert attn.to_k.input_group.weight is None


def test_stage2_scales_that_do_not_nest_keep_the_per_sample_path():
    """Scale 3 cuts interval 2 of scale 8 (t ∈ [250, 375) spans 333): context experts differ by t."""
    layer, ctx = _layer([8, 3], mode="assemble")
    x = torch.randn(2, 5, 8)
    t = torch.tensor([300, 340])  # interval 2 of 8; intervals 0 and 1 of 3
    ctx.set(t)
    ref = layer(x)
    layer.merge(2)
    assert layer.fused_tables_a is None and "forward" not in vars(layer)
    ctx.set(t)
    close(layer(x), ref)


def test_compiled_model_swaps_experts_without_recompiling():
    """torch.compile (fullgraph: no graph breaks) traces the merged model once; switching
    intervals and unmerge/merge cycles reuse that graph. (The unmerged per-sample path checks
    the timesteps' range on the host, so it compiles with a graph break; sampling runs merged.)"""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    ctx = TimestepContext(T)
    net = nn.Sequential(
        TSMLinear(nn.Linear(8, 8), ctx, [8], rank=2),
        nn.ReLU(),
        TSMLinear(nn.Linear(8, 8), ctx, [8, 4, 2, 1], rank=2, mode="assemble"),
    )
    for layer in (net[0], net[2]):
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if "lora_B" in name or "router" in name:
                    p.normal_()
    counter = CompileCounter()
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    x, mixed = torch.randn(2, 3, 8), torch.tensor([5, 900])
    with torch.no_grad():
        ctx.set(mixed)
        eager = {None: net(x)}
        for i in range(8):
            ctx.set(torch.tensor([i * 125 + 7, i * 125 + 100]))
            eager[i] = net(x)
        for _cycle in range(2):
            for i in (0, 3, 5, 7, 2):
                merge_interval(net, i)
                ctx.set(torch.tensor([i * 125 + 7, i * 125 + 100]))
                close(compiled(x), eager[i])
            unmerge_all(net)
            ctx.set(mixed)
            close(net(x), eager[None])
        plan = SwitchPlan([net[0], net[2]], keep=True)  # generation's switcher: kept intervals
        for i in (0, 3, 0, 3):  # the second visits copy the kept merged weights
            plan.switch(i)
            ctx.set(torch.tensor([i * 125 + 7, i * 125 + 100]))
            close(compiled(x), eager[i])
    assert counter.frame_count == 1


def test_compiled_pair_computes_each_member_alone_without_recompiling():
    """Under torch.compile nothing is kept between calls: each member of a shared-input pair
    computes its own block; switching intervals reuses the graph."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    attn, ctx = _pair("softmax")

    def kv(x):
        return torch.cat([attn.to_k(x), attn.to_v(x)], dim=-1)

    counter = CompileCounter()
    compiled = torch.compile(kv, backend=counter, fullgraph=True)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        for i in (1, 6, 3):
            t = torch.tensor([i * 125 + 7, i * 125 + 90])
            ctx.set(t)
            eager = kv(x)
            merge_interval(attn, i)
            ctx.set(t)
            close(compiled(x), eager)
            unmerge_all(attn)
    assert counter.frame_count == 1


def test_moving_or_casting_a_merged_layer_is_refused_and_works_after_unmerge():
    """A switch writes through views gathered at the first merge, so a cast copy would keep the
    old interval after the next switch (measured: 8.5 off); refused while merged, exact after."""
    layer, ctx = _layer([4])
    x = torch.randn(2, 5, 8)
    ctx.set(torch.tensor([800, 900]))
    ref = layer(x).double()
    layer.merge(1)
    layer.to(torch.float32)  # a no-op move is allowed
    with pytest.raises(RuntimeError, match="unmerge_all"):
        layer.double()
    assert layer.base.weight.dtype == torch.float32 and layer.merged_interval == 1
    layer.unmerge()
    layer.double()
    layer.merge(3)
    ctx.set(torch.tensor([800, 900]))
    torch.testing.assert_close(layer(x.double()), ref, rtol=0, atol=64 * EPS32 * float(ref.abs().max()))
