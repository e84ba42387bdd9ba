"""The VC2 presets against the real VC2 modules: 132 UNet projections, a text LoRA that acts."""

import torch

from tsm_video.models.vc2 import VC2_TINY_ARCH, VC2TextEncoder, VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS
from tsm_video.tsm import TimestepContext, inject, summary


def test_vc2_preset_wraps_132_projections_of_the_full_unet():
    unet = VC2UNet(**VC2_UNET_PARAMS, device="meta")  # full 512 config, no memory
    names = inject(unet, "vc2", TimestepContext(), [8, 4, 2, 1], mode="assemble")
    assert len(names) == 132 and summary(unet).startswith("132 × TSMLinear")
    assert {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in names} == {
        "attn1.to_k",
        "attn1.to_v",
        "attn2.to_k",
        "attn2.to_v",
    }
    assert "input_blocks.1.1.transformer_blocks.0.attn1.to_k" in names  # spatial
    assert "input_blocks.1.2.transformer_blocks.0.attn2.to_v" in names  # temporal
    assert any(n.startswith("init_attn.") for n in names)


def test_vc2_text_preset_changes_the_text_encoder_output(perturb):
    torch.manual_seed(0)
    enc = VC2TextEncoder(**VC2_TINY_ARCH["text"])
    tokens = torch.randint(0, 1000, (2, 77))
    before = enc(tokens)
    names = inject(enc, "vc2-text", None, [1], rank=2)
    layers = VC2_TINY_ARCH["text"]["layers"]
    assert names == [f"transformer.resblocks.{i}.attn.out_proj" for i in range(layers)]
    assert torch.equal(enc(tokens), before)  # B zero-init: unchanged
    perturb(enc)
    assert not torch.allclose(enc(tokens), before)  # the attention forward really calls out_proj
