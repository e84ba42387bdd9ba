"""TSM on VC2UNet: the "vc2" preset's targets, and folds that keep the batch outermost."""

from __future__ import annotations

import torch
from torch import nn

from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS
from tsm_video.tsm import TimestepContext, inject, tsm_layers

TINY = {
    "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [2, 1],
    "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "context_dim": 24,
    "temporal_length": 4, "use_linear": True, "temporal_conv": True, "temporal_selfatt_only": False,
    "use_relative_position": False, "addition_attention": True, "fps_cond": True,
}  # fmt: skip


def test_vc2_preset_wraps_132_linears_of_the_real_unet():
    unet = VC2UNet.from_lvdm_config(VC2_UNET_PARAMS, device="meta")
    names = inject(unet, "vc2", ctx=TimestepContext(), scales=[4], rank=4)
    assert len(names) == 132
    assert all(type(layer.base) is nn.Linear for _, layer in tsm_layers(unet))
    assert {n.rsplit(".", 1)[1] for n in names} == {"to_k", "to_v"}
    assert sum(n.startswith("init_attn.0.") for n in names) == 4  # init_attn's attn1/attn2 to_k/to_v


def test_mixed_timestep_batch_equals_samples_alone():
    """Every TSM layer sees rows (b f)/(b h w) with b outermost, so per-sample experts line up."""
    torch.manual_seed(0)
    unet = VC2UNet.from_lvdm_config(TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ctx = TimestepContext(num_timesteps=1000)
    # temporal_selfatt_only=False: temporal attn2 cross-attends to context folded as (b h w)
    names = inject(unet, "vc2", ctx=ctx, scales=[4, 2], rank=2, mode="assemble")
    assert any(".2.transformer_blocks.0.attn2.to_k" in n for n in names)  # a temporal cross-attention
    with torch.no_grad():  # push experts and routers off their zero init
        for name, p in unet.named_parameters():
            if "lora_B" in name or "router" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    x = torch.randn(3, 4, 2, 4, 4, generator=g)
    context = torch.randn(3, 5, 24, generator=g)
    t = torch.tensor([10, 900, 480])  # three different intervals at scale 4
    fps = torch.tensor([8, 28, 16])
    with torch.no_grad():
        ctx.set(t)
        batched = unet(x, t, context, fps=fps)
        alone = []
        for i in range(3):
            ctx.set(t[i : i + 1])
            alone.append(unet(x[i : i + 1], t[i : i + 1], context[i : i + 1], fps=fps[i : i + 1]))
        ctx.set(t.flip(0))  # the experts matter: other timesteps for the same inputs change the output
        swapped = unet(x, t, context, fps=fps)
    torch.testing.assert_close(batched, torch.cat(alone), rtol=0, atol=2e-5)
    assert (swapped - batched).abs().max() > 1e-3
