"""What a merged model costs per denoiser call, counted (load-independent): the aten ops dispatched
by one forward of the vc2-tiny UNet.

Merged vanilla LoRA and merged stage 1 must run exactly the base's ops (a merged layer is one
base-sized linear with ``W0 + ΔW``). Merged stage 2 adds, per ``to_k``/``to_v`` pair (one
:class:`~tsm_video.tsm.fused.SharedInputGroup`), a fixed handful of ops, the same for one
context expert ([8, 1]) and three ([8, 4, 2, 1]): its two base linears become one wider ``mm``
(gate logits and ``A_ctx x`` ride along) split into views, plus for both layers at once the
``Emb(t)`` row (picked once per timestep: the first call after ``ctx.set`` with a new ``t``;
classifier-free guidance's second call at that ``t`` reuses it), the gate, the gating product,
one ``addmm_`` and the output views.
"""

import copy
from collections import Counter

import pytest
import torch

from benchmarks.counts import op_counts
from benchmarks.tiny_models import randomise_adapters, tiny_vc2_unet
from tsm_video.models.vc2.configs import VC2_TINY_ARCH
from tsm_video.tsm import TimestepContext, inject, merge_timestep, tsm_layers

T = 1000


@pytest.fixture(scope="module")
def unets():
    base = tiny_vc2_unet()
    models = {"base": (base, None)}
    gen = torch.Generator().manual_seed(1)
    for name, scales, mode in (
        ("lora", [1], "foster"),
        ("foster", [8], "foster"),
        ("assemble", [8, 1], "assemble"),  # the recipes' scales
        ("assemble_multi", [8, 4, 2, 1], "assemble"),
    ):
        unet, ctx = copy.deepcopy(base), TimestepContext(T)
        inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, mode=mode)
        randomise_adapters(unet, gen)
        merge_timestep(unet, 501)
        models[name] = (unet, ctx)
    x, t = torch.randn(1, 4, 4, 4, 4), torch.tensor([501])  # (B, C, F, h, w)
    context, fps = torch.randn(1, 77, VC2_TINY_ARCH["unet"]["context_dim"]), torch.tensor([28])
    counts, outputs = {}, {}
    with torch.no_grad():
        for name, (unet, ctx) in models.items():
            for call in ("first", "again"):  # a new timestep, then another call at it
                if ctx is not None:
                    ctx.set(t)  # once per call, outside the UNet (predict_noise does it)
                counts[name, call] = op_counts(lambda unet=unet: unet(x, t, context, fps=fps))
            outputs[name] = unet(x, t, context, fps=fps)
    return models, counts, outputs


@pytest.mark.parametrize("name", ["lora", "foster"])
def test_merged_lora_and_stage1_run_exactly_the_base_ops(unets, name):
    _, counts, outputs = unets
    assert counts[name, "first"] == counts[name, "again"] == counts["base", "first"]
    assert not torch.equal(outputs[name], outputs["base"])  # the experts are there


@pytest.mark.parametrize("name", ["assemble", "assemble_multi"])
def test_merged_stage2_adds_a_fixed_handful_of_ops_per_shared_input_pair(unets, name):
    models, counts, _ = unets
    unet, _ = models[name]
    groups = {id(layer.input_group) for _, layer in tsm_layers(unet)}
    layers = len(tsm_layers(unet))
    assert len(groups) * 2 == layers == 60  # every to_k shares its group with its to_v
    pairs = len(groups)
    # two base linears on (N, L, in) (t, view, mm, _unsafe_view each) become one on the flattened
    # input (view, t, mm) split into [y | FC x | A_ctx x] of both members; then, for both
    # members at once and whatever the number k of context experts: the gate (Emb(t) added in
    # place), the gating product in place (mul_), B_ctx (one addmm_ of the block-diagonal
    # table) and the outputs (view, split_with_sizes; the views replace the base's folds)
    expected = {
        "aten.t": -pairs,
        "aten.mm": -pairs,
        "aten.add_": pairs,
        "aten._unsafe_view": -2 * pairs,
        "aten.split_with_sizes": 2 * pairs,
        "aten.mul_": pairs,
        "aten.addmm_": pairs,
    }
    for call, per_timestep in (("first", {"aten.select": pairs}), ("again", {})):
        extra = Counter(counts[name, call])
        extra.subtract(counts["base", "first"])
        assert {op: n for op, n in extra.items() if n} == expected | per_timestep, call
