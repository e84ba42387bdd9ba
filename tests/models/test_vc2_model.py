"""VC2Model bundle and backbone registry: the real config's manifest on meta, the tiny model's protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tsm_video.diffusion import CHECKPOINT_BUFFERS, VC2Schedule, ddim_sample
from tsm_video.generation import GenerateSettings
from tsm_video.models import BACKBONES, build_backbone
from tsm_video.models.vc2 import VC2_TINY_ARCH, VC2Model

MANIFEST = Path(__file__).parents[1] / "fixtures" / "vc2" / "vc2_full_manifest.json"


@pytest.fixture(scope="module")
def tiny() -> VC2Model:
    torch.manual_seed(0)
    return build_backbone("vc2-tiny").eval()


def test_real_config_on_meta_has_exactly_the_official_keys_and_shapes():
    manifest = json.loads(MANIFEST.read_text())
    parts = manifest["parts"]
    expected = {k: tuple(s) for part in ("unet", "vae", "text") for k, s, _ in parts[part]["keys"]}
    buffers = {k: tuple(s) for k, s, _ in parts["schedule_buffers"]["persistent_keys"]}
    model = build_backbone("vc2", device="meta")
    assert all(p.is_meta for p in model.parameters())
    ours = model.checkpoint_state_dict()
    # the 13 schedule buffers come from VC2Schedule (derived tables), everything else is a parameter
    assert set(buffers) == set(CHECKPOINT_BUFFERS) == set(model.schedule.checkpoint_buffers())
    assert {k: tuple(v.shape) for k, v in ours.items()} == {**expected, **buffers}
    assert len(ours) == manifest["total_keys"] == 2039
    assert not list(model.buffers())  # no module buffers: every non-schedule key is a parameter
    for attr, part in (("unet", "unet"), ("vae", "vae"), ("text_encoder", "text")):
        assert sum(p.numel() for p in getattr(model, attr).parameters()) == parts[part]["num_params"], attr


def test_registry_names_and_errors():
    assert {"vc2", "vc2-tiny"} <= set(BACKBONES)
    assert BACKBONES["vc2"].pixel_multiple == 64 and BACKBONES["vc2-tiny"].pixel_multiple == 16
    with pytest.raises(ValueError, match="valid: .*vc2, vc2-tiny"):
        build_backbone("vc3")
    with pytest.raises(ValueError, match="unknown arch section"):
        VC2Model.from_config({**VC2_TINY_ARCH, "extra": 1})
    with pytest.raises(ValueError, match="context_dim"):
        VC2Model.from_config({**VC2_TINY_ARCH, "text": {**VC2_TINY_ARCH["text"], "width": 128}})
    with pytest.raises(ValueError, match="missing section"):
        VC2Model.from_config({"unet": VC2_TINY_ARCH["unet"]})


def test_tiny_protocol_shapes_and_dtypes(tiny):
    assert tiny.denoiser_targets == "vc2" and tiny.text_preset == "vc2-text"
    assert isinstance(tiny.schedule, VC2Schedule) and tiny.tsm_ctx is None
    pixels = torch.rand(2, 3, 2, 16, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        context = tiny.encode_text(["a cat", "a dog on a skateboard"])
        z = tiny.encode_video(pixels, sample=False)
        z_sample = tiny.encode_video(pixels, generator=torch.Generator().manual_seed(2))
        eps = tiny.predict_noise(z, torch.tensor([10, 900]), context, torch.tensor([8, 24]))
        video = tiny.decode(z)
    assert context.shape == (2, 77, 64)
    assert z.shape == z_sample.shape == eps.shape == (2, 4, 2, 2, 4)
    assert not torch.equal(z, z_sample)
    assert video.shape == pixels.shape
    assert torch.isfinite(eps).all() and torch.isfinite(video).all()


def test_predict_noise_sets_the_timestep_context_first(tiny):
    seen = []

    class RecordingContext:
        def set(self, t):
            seen.append(t.clone())

    unet_calls = []
    handle = tiny.unet.register_forward_pre_hook(lambda module, args: unet_calls.append(len(seen)))
    tiny.tsm_ctx = RecordingContext()
    try:
        t = torch.tensor([3, 999])
        with torch.no_grad():
            tiny.predict_noise(torch.zeros(2, 4, 2, 4, 4), t, torch.zeros(2, 77, 64), 8)
    finally:
        tiny.tsm_ctx = None
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], t)
    assert unet_calls == [1]  # the context was set before the UNet ran


def test_schedule_is_not_cast_with_the_model():
    model = build_backbone("vc2-tiny", dtype=torch.bfloat16)
    assert model.unet.time_embed[0].weight.dtype == torch.bfloat16
    assert model.schedule.alphas_cumprod.dtype == torch.float32


def test_protocol_methods_are_the_vc2_formulas(tiny):
    """add_noise is LVDM's q_sample with scale_arr (closed form in float64; tolerance 8 float32
    ulps at |x_t| <= 4, the tables being float32-rounded); the target is ε; loss is the per-sample
    ε-MSE; predict rounds fps as VC2 does."""
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 200, 999])
    x_t, target = tiny.add_noise(x0, noise, t)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1, 1)
    scale = torch.tensor([1.0, 1 - 0.3 * 200 / 399, 0.7], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    ref = acp.sqrt() * x0.double() * scale + (1 - acp).sqrt() * noise.double()  # scale_arr: 1 → 0.7 over 400
    assert x_t.abs().max() <= 4
    assert torch.allclose(x_t.double(), ref, rtol=0, atol=8 * 2**-23 * 4) and torch.equal(target, noise)
    assert torch.equal(x_t, VC2Schedule().q_sample(x0, t, noise))
    expected = ((x0.double() - noise.double()) ** 2).flatten(1).mean(1)
    assert torch.allclose(tiny.loss(x0, target).double(), expected, rtol=1e-6, atol=0)  # float32 sums of 128
    with torch.no_grad():
        context = tiny.encode_text(["a", "b", "c"])
        fps = torch.tensor([7.6, 8.0, 8.4])  # rounded like VC2's own fps conditioning: 8, 8, 8
        assert torch.equal(
            tiny.predict(x_t, t, context, fps=fps), tiny.unet(x_t, t, context, fps=torch.full((3,), 8))
        )


def test_sample_is_the_official_ddim_and_text_targets_skip_the_unread_block(tiny):
    settings = GenerateSettings(
        height=32, width=32, num_frames=2, steps=4, eta=1.0, guidance_scale=5.0, fps=8
    )
    assert tiny.latent_shape(settings) == (4, 2, 4, 4)
    x_T = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cond, uncond = tiny.encode_text(["a", "b"]), tiny.encode_text([""])
        ours = tiny.sample(x_T, cond, uncond, settings, [torch.Generator().manual_seed(s) for s in (1, 2)])
        ref = ddim_sample(
            tiny.predict_noise,
            x_T,
            cond,
            uncond,
            fps=8,
            steps=4,
            eta=1.0,
            guidance_scale=5.0,
            schedule=tiny.schedule,
            generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        )
    assert torch.equal(ours, ref)
    # the tiny text tower has 3 blocks, read at the penultimate layer: block 2 never runs
    assert tiny.text_targets == {"text": [f"transformer.resblocks.{i}.attn.out_proj" for i in (0, 1)]}
    assert tiny.text_encoders == {"text": tiny.text_encoder} and tiny.denoiser is tiny.unet
