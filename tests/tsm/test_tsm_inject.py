"""inject (patterns, presets, errors), configure_stage (exact trainable sets), model-level merging."""

import pytest
import torch
from torch import nn

from tsm_video.tsm import (
    PRESETS,
    TimestepContext,
    TSMConv,
    TSMLinear,
    configure_stage,
    inject,
    merge_interval,
    merge_timestep,
    summary,
    trainable_parameters,
    tsm_layers,
    unmerge_all,
)

T = 1000


class Attn(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.to_out(self.to_q(x) * self.to_k(x).tanh() + self.to_v(x))


class Block(nn.Module):
    """Named like VC2: ``transformer_blocks.0.attn1`` (spatial) / ``attn2``, plus a Conv1d proj_in."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv1d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList([nn.ModuleDict({"attn1": Attn(dim), "attn2": Attn(dim)})])

    def forward(self, x):  # x (b f) tokens c
        x = self.proj_in(x.transpose(1, 2)).transpose(1, 2)  # (b f) c tokens → (b f) tokens c
        blk = self.transformer_blocks[0]
        return blk["attn2"](blk["attn1"](x))


class TinyNet(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.init_attn = Block(dim)
        self.input_blocks = nn.ModuleList([nn.Linear(dim, dim), nn.ModuleList([nn.Identity(), Block(dim)])])

    def forward(self, x):
        return self.input_blocks[1][1](self.input_blocks[0](self.init_attn(x)))


def test_vc2_preset_wraps_spatial_temporal_and_init_attn_k_v():
    net = TinyNet()
    names = inject(net, "vc2", TimestepContext(T), scales=[4])
    prefixes = ("init_attn", "input_blocks.1.1")
    assert sorted(names) == sorted(
        f"{p}.transformer_blocks.0.attn{a}.to_{kv}" for p in prefixes for a in (1, 2) for kv in "kv"
    )
    assert all(isinstance(m, TSMLinear) for _, m in tsm_layers(net)) and len(tsm_layers(net)) == 8
    assert "8 × TSMLinear(scales=[4]" in summary(net)


def test_list_suffix_regex_and_conv_dispatch():
    assert inject(TinyNet(), "sd", None, [1])[:4] == [
        f"init_attn.transformer_blocks.0.attn1.{n}" for n in ("to_q", "to_k", "to_v", "to_out.0")
    ]
    net = TinyNet()
    names = inject(net, ["proj_in"], TimestepContext(T), [2])
    assert names == ["init_attn.proj_in", "input_blocks.1.1.proj_in"]
    assert isinstance(net.init_attn.proj_in, TSMConv)
    assert inject(TinyNet(), r"input_blocks\.0", None, [1]) == ["input_blocks.0"]


def test_regex_is_a_full_match_and_suffix_respects_dots():
    with pytest.raises(ValueError, match="matched no module"):
        inject(TinyNet(), r"blocks\.0", None, [1])  # full match only
    with pytest.raises(ValueError, match="matched no module"):
        inject(TinyNet(), ["o_k"], None, [1])  # suffixes match whole dotted parts


def test_zero_matches_lists_close_names():
    with pytest.raises(ValueError, match=r"close names: \[.*to_k") as err:
        inject(TinyNet(), ["attn1.to_kk"], None, [1])
    assert "attn1.to_k" in str(err.value)


def test_refuses_multihead_attention_out_proj_and_unsupported_types():
    enc = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2)})
    with pytest.raises(ValueError, match="inside nn.MultiheadAttention"):
        inject(enc, PRESETS["vc2-text"], None, [1])
    with pytest.raises(ValueError, match="Dropout; supported: Linear, Conv1d"):
        inject(TinyNet(), ["to_out.1"], None, [1])
    net = TinyNet()
    inject(net, "vc2", TimestepContext(T), [2])
    with pytest.raises(ValueError, match="TSMLinear"):
        inject(net, "vc2", TimestepContext(T), [2])  # already wrapped


def run_step(net, ctx, perturb_fn=None):
    torch.manual_seed(1)
    x = torch.randn(4 * 2, 5, 8)  # (b f) tokens c, b = 4
    ctx.set(torch.tensor([10, 300, 600, 900]))
    net.zero_grad(set_to_none=True)
    net(x).square().mean().backward()
    return {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage_one_trains_only_experts(perturb):
    net, ctx = TinyNet(), TimestepContext(T)
    inject(net, "vc2", ctx, [4], rank=2)
    perturb(net)
    configure_stage(net, "foster")
    expect = {f"{n}.lora_{ab}.s4" for n, _ in tsm_layers(net) for ab in "AB"}
    assert {n for n, _ in trainable_parameters(net)} == expect
    assert run_step(net, ctx) == expect


def test_stage_two_trains_only_routers(perturb):
    net, ctx = TinyNet(), TimestepContext(T)
    inject(net, "vc2", ctx, [4, 2, 1], rank=2, mode="assemble", gate_activation="sigmoid")
    inject(net, ["attn1.to_q"], None, [1])  # e.g. a text LoRA: has no router, stays frozen in stage 2
    perturb(net)
    configure_stage(net, "assemble")
    expect = {
        f"{n}.router.{p}"
        for n, m in tsm_layers(net)
        if m.router is not None
        for p in ("fc.weight", "emb.weight")
    }
    assert {n for n, _ in trainable_parameters(net)} == expect
    assert run_step(net, ctx) == expect
    with pytest.raises(ValueError, match="unknown stage"):
        configure_stage(net, "stage2")


def test_model_level_merge_helpers(perturb):
    net, ctx = TinyNet(), TimestepContext(T)
    inject(net, "vc2", ctx, [4], rank=2)
    perturb(net)
    w0 = {n: m.base.weight.detach().clone() for n, m in tsm_layers(net)}
    x = torch.randn(2, 5, 8)
    ctx.set(torch.tensor([600, 700]))
    y = net(x)
    merge_interval(net, 2)
    torch.testing.assert_close(net(x), y, atol=1e-5, rtol=1e-5)
    merge_timestep(net, 999)
    assert {m.merged_interval for _, m in tsm_layers(net)} == {3}
    unmerge_all(net)
    assert max((m.base.weight - w0[n]).abs().max().item() for n, m in tsm_layers(net)) <= 1e-6
    inject(net, ["to_q"], None, [1])
    with pytest.raises(ValueError, match="pass scale="):
        merge_interval(net, 0)
    merge_interval(net, 1, scale=4)
    merge_timestep(net, 10)  # scale-1 layers merge interval 0, scale-4 layers interval 0
    assert {m.merged_interval for _, m in tsm_layers(net)} == {0}


def test_model_level_merge_skips_symmetric_moe_layers():
    net, ctx = TinyNet(), TimestepContext(T)
    inject(net, "vc2", ctx, [4, 2], rank=2, mode="moe")
    with pytest.raises(ValueError, match="no TSM layer has core scale"):
        merge_interval(net, 0, scale=4)
    merge_timestep(net, 500)
    assert all(m.merged_interval is None for _, m in tsm_layers(net))
