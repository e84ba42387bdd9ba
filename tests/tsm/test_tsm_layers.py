"""TSM layers: closed forms, per-sample equivalence, folded batches, gradients, checkpointing
(merging: test_tsm_merge.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tsm_video.tsm import ContextError, TimestepContext, TSMConv, TSMLinear

T = 1000


def lora_linear(x, layer, scale, i):
    """Closed form ``W0 x + b + (α/r) B A x`` with expert ``i`` of ``scale``."""
    a, b = layer.lora_A[f"s{scale}"][i], layer.lora_B[f"s{scale}"][i]
    return layer.base(x) + layer.scaling * (x @ a.T @ b.T)


def test_scale_one_is_vanilla_lora_without_context(perturb):
    torch.manual_seed(0)
    layer = TSMLinear(nn.Linear(6, 5), None, [1], rank=3, alpha=6.0)
    perturb(layer)
    x = torch.randn(4, 7, 6)
    torch.testing.assert_close(layer(x), lora_linear(x, layer, 1, 0))
    assert layer.scaling == 2.0
    with pytest.raises(ValueError, match="TimestepContext"):
        TSMLinear(nn.Linear(6, 5), None, [4])


def test_foster_expert_equals_lora_in_its_interval_and_gets_no_grad_from_outside(perturb):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(6, 5), ctx, [4], rank=2)
    perturb(layer)
    t = torch.tensor([260, 990, 10])  # intervals 1, 3, 0
    x = torch.randn(3, 7, 6)
    ctx.set(t)
    y = layer(x)
    for b, i in enumerate([1, 3, 0]):
        torch.testing.assert_close(y[b], lora_linear(x[b], layer, 4, i))
    y.square().sum().backward()
    ga, gb = layer.lora_A["s4"].grad, layer.lora_B["s4"].grad
    assert torch.count_nonzero(ga[2]) == 0 and torch.count_nonzero(gb[2]) == 0  # no sample in interval 2
    assert all(torch.count_nonzero(ga[i]) > 0 and torch.count_nonzero(gb[i]) > 0 for i in (0, 1, 3))


def test_unset_context_is_an_error():
    layer = TSMLinear(nn.Linear(4, 4), TimestepContext(T), [2])
    with pytest.raises(ContextError, match="unset"):
        layer(torch.randn(2, 4))


def test_leading_dim_must_fold_the_batch():
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(4, 4), ctx, [2])
    ctx.set(torch.tensor([1, 900]))
    with pytest.raises(ValueError, match="not a multiple of the 2 timesteps"):
        layer(torch.randn(3, 4))


def loop_per_sample(layer, ctx, x, t):
    """Reference: one forward per sample, rows of sample b = x[b·N/B : (b+1)·N/B]."""
    rows = x.shape[0] // t.shape[0]
    outs = []
    for b in range(t.shape[0]):
        ctx.set(t[b : b + 1])
        outs.append(layer(x[b * rows : (b + 1) * rows]))
    ctx.set(t)
    return torch.cat(outs)


CONVS = [
    lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1),
    lambda: nn.Conv2d(3, 5, 3, padding=2, dilation=2),
    lambda: nn.Conv3d(3, 5, (1, 3, 3), padding=(0, 1, 1)),
]
MODES = [
    ("foster", [4], "none"),
    ("assemble", [4, 2, 1], "none"),
    ("assemble", [4, 2, 1], "softmax"),
    ("assemble", [8, 2], "sigmoid"),
    ("moe", [4, 2], "softmax"),
]


@pytest.mark.parametrize("mode,scales,act", MODES)
@pytest.mark.parametrize(
    "make", [lambda: nn.Linear(6, 5), *CONVS], ids=["linear", "conv1d", "conv2d", "conv3d"]
)
def test_mixed_timestep_batch_equals_per_sample_loop(make, mode, scales, act, perturb):
    torch.manual_seed(0)
    base = make()
    ctx = TimestepContext(T)
    cls = TSMLinear if isinstance(base, nn.Linear) else TSMConv
    layer = cls(base, ctx, scales, rank=2, mode=mode, gate_activation=act)
    perturb(layer)
    t = torch.tensor([5, 400, 600, 999])
    shape = {
        nn.Linear: (4 * 3, 7, 6),
        nn.Conv1d: (4 * 3, 3, 9),
        nn.Conv2d: (4 * 2, 3, 6, 5),
        nn.Conv3d: (4, 3, 2, 5, 4),
    }[type(base)]
    x = torch.randn(shape)
    ctx.set(t)
    y = layer(x)
    assert y.shape == base(x).shape
    torch.testing.assert_close(y, loop_per_sample(layer, ctx, x, t))
    assert not torch.allclose(y, base(x))


@pytest.mark.parametrize("fold", ["b f", "b h w"])
def test_folded_leading_dims_use_each_samples_expert(fold, perturb):
    """Spatial attention sees (b·f, hw, c); temporal sees (b·h·w, f, c); batch is outermost."""
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(6, 6), ctx, [4], rank=2)
    perturb(layer)
    b, f, h, w = 2, 3, 2, 2
    video = torch.randn(b, f, h, w, 6)
    if fold == "b f":
        x = video.reshape(b * f, h * w, 6)  # (b f) (h w) c
    else:
        x = video.permute(0, 2, 3, 1, 4).reshape(b * h * w, f, 6)  # (b h w) f c
    t = torch.tensor([100, 800])  # intervals 0, 3
    ctx.set(t)
    y = layer(x).reshape(b, -1, 6)  # b (rows tokens) c
    xs = x.reshape(b, -1, 6)
    for s, i in enumerate([0, 3]):
        torch.testing.assert_close(y[s], lora_linear(xs[s], layer, 4, i))


def core_only(base, scales, ctx, layer):
    ref = type(layer)(base, ctx, [scales[0]], rank=layer.rank, alpha=layer.alpha)
    with torch.no_grad():
        ref.lora_A[f"s{scales[0]}"].copy_(layer.lora_A[f"s{scales[0]}"])
        ref.lora_B[f"s{scales[0]}"].copy_(layer.lora_B[f"s{scales[0]}"])
    return ref


@pytest.mark.parametrize("act", ["none", "softmax", "sigmoid"])
@pytest.mark.parametrize("conv", [False, True])
def test_assemble_at_init_equals_core_expert_exactly(act, conv):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    base = nn.Conv2d(3, 4, 3, padding=1) if conv else nn.Linear(6, 4)
    cls = TSMConv if conv else TSMLinear
    layer = cls(base, ctx, [1, 2, 8], rank=2, mode="assemble", gate_activation=act)
    with torch.no_grad():
        for bank in layer.lora_B.values():
            bank.normal_()
    x = torch.randn(3, 3, 5, 5) if conv else torch.randn(3, 5, 6)
    ctx.set(torch.tensor([0, 500, 999]))
    assert torch.count_nonzero(layer.router(x, ctx.timestep_index())) == 0  # gates exactly 0 at init
    y, core = layer(x), core_only(base, layer.scales, ctx, layer)(x)
    if conv:  # the grouped conv over k·r channels may round differently from one over r channels
        torch.testing.assert_close(y, core, atol=1e-6, rtol=0)
    else:
        assert torch.equal(y, core)


def test_assemble_closed_form_with_trained_router(perturb):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(6, 4), ctx, [4, 2, 1], rank=2, mode="assemble", gate_activation="sigmoid")
    perturb(layer)
    x, t = torch.randn(2, 5, 6), torch.tensor([300, 700])
    ctx.set(t)
    y = layer(x)
    for b in range(2):
        z = x[b] @ layer.router.fc.weight.T + layer.router.emb.weight[t[b]]  # (tokens, 2)
        g = torch.sigmoid(z) - 0.5
        core = lora_linear(x[b], layer, 4, int(t[b]) * 4 // T)
        ctx_terms = [
            g[:, j : j + 1]
            * (
                x[b]
                @ layer.lora_A[f"s{n}"][int(t[b]) * n // T].T
                @ layer.lora_B[f"s{n}"][int(t[b]) * n // T].T
            )
            for j, n in enumerate([2, 1])
        ]
        torch.testing.assert_close(y[b], core + layer.scaling * sum(ctx_terms))


def test_bad_configurations_raise():
    ctx = TimestepContext(T)
    with pytest.raises(ValueError, match="one context expert is constant"):
        TSMLinear(nn.Linear(4, 4), ctx, [4, 1], mode="assemble", gate_activation="softmax")
    with pytest.raises(ValueError, match="needs one scale"):
        TSMLinear(nn.Linear(4, 4), ctx, [4, 1], mode="foster")
    with pytest.raises(ValueError, match="distinct"):
        TSMLinear(nn.Linear(4, 4), ctx, [4, 4], mode="assemble")
    with pytest.raises(ValueError, match="unknown gate activation"):
        TSMLinear(nn.Linear(4, 4), ctx, [4, 2], mode="assemble", gate_activation="relu")
    with pytest.raises(ValueError, match="groups=1"):
        TSMConv(nn.Conv2d(4, 4, 3, groups=2), ctx, [2])


def test_adapter_dtype_is_explicit(perturb):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    base = nn.Linear(8, 8).to(torch.bfloat16)
    layer = TSMLinear(base, ctx, [2], rank=2, dtype=torch.float32)
    perturb(layer)
    assert layer.lora_A["s2"].dtype == torch.float32
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    ctx.set(torch.tensor([0, 999]))
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = base(x).float() + torch.stack(
        [layer.scaling * x[b].float() @ layer.lora_A["s2"][b].T @ layer.lora_B["s2"][b].T for b in range(2)]
    )
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)


def test_checkpoint_recompute_sees_the_same_timesteps(perturb):
    torch.manual_seed(0)
    ctx = TimestepContext(T)
    layer = TSMLinear(nn.Linear(6, 6), ctx, [4, 2], rank=2, mode="assemble")
    perturb(layer)
    x = torch.randn(2, 3, 6, requires_grad=True)
    ctx.set(torch.tensor([100, 900]))
    f = lambda v: F.gelu(layer(v)).square().sum()  # noqa: E731
    f(x).backward()
    expect = [p.grad.clone() for p in (x, layer.router.fc.weight, layer.router.emb.weight)]
    for p in (x, *layer.parameters()):
        p.grad = None
    checkpoint(f, x, use_reentrant=False).backward()  # recomputes layer(v) during backward
    for e, p in zip(expect, (x, layer.router.fc.weight, layer.router.emb.weight)):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize("make", CONVS, ids=["conv1d", "conv2d", "conv3d"])
def test_conv_expert_closed_form(make, perturb):
    """Expert of t: ``base(x) + (α/r)·conv_B1x1(conv_A(x))`` with A in the base conv's geometry."""
    torch.manual_seed(0)
    base = make()
    ctx = TimestepContext(T)
    layer = TSMConv(base, ctx, [4], rank=2, alpha=3.0)
    perturb(layer)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[layer.dims]
    x = torch.randn(4, 3, *[6] * layer.dims)  # (b f) c *S with b=2, f=2
    ctx.set(torch.tensor([990, 300]))  # intervals 3, 1
    y = layer(x)
    for s, i in enumerate([3, 1]):
        xs = x[2 * s : 2 * s + 2]
        h = conv(xs, layer.lora_A["s4"][i], stride=base.stride, padding=base.padding, dilation=base.dilation)
        delta = torch.einsum("nr...,or->no...", h, layer.lora_B["s4"][i])
        torch.testing.assert_close(y[2 * s : 2 * s + 2], base(xs) + 1.5 * delta)
