"""TSM layers inside diffusers models: per-sample routing, stock pipelines unchanged, refusals."""

from __future__ import annotations

import pytest
import torch

from tsm_video.generation.settings import GenerateSettings
from tsm_video.models import build_backbone
from tsm_video.models.image import TSMCompatibilityError
from tsm_video.tsm import TimestepContext, inject, merge_timestep, tsm_layers, unmerge_all

NAMES = ("sd15-tiny", "sd2-tiny", "pixart-alpha-tiny", "sd3-tiny")
EPS32 = torch.finfo(torch.float32).eps


def _tsm(name: str, scales=(4, 1)):
    """A tiny backbone with stage-2 TSM layers whose experts and routers are all non-zero."""
    torch.manual_seed(0)
    bb = build_backbone(name)
    ctx = TimestepContext(bb.num_timesteps)
    inject(bb.denoiser, bb.denoiser_targets, ctx, list(scales), rank=2, alpha=3.0, mode="assemble")
    bb.tsm_ctx = ctx
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in tsm_layers(bb.denoiser):
            for p in (*layer.lora_B.values(), *layer.router.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return bb


@pytest.fixture(scope="module")
def tsm_models():
    return {name: _tsm(name) for name in NAMES}


def _close(a: torch.Tensor, b: torch.Tensor, ulps: float = 64) -> bool:
    """Equal up to float32 reassociation: ``ulps`` ulps of the largest magnitude (batched vs
    single-sample matmuls and merged vs low-rank weights sum the same terms in other orders)."""
    return bool((a - b).abs().max() <= ulps * EPS32 * max(float(a.abs().max()), float(b.abs().max())))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_t_batch_equals_single_sample_runs(tsm_models, name):
    bb = tsm_models[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *bb.latent_shape(GenerateSettings(height=64, width=64)), generator=g)
    t = bb.sample_t(torch.tensor([0, 3]), 4, g)  # two intervals of the core scale
    cond = bb.encode_text(["a red circle", "two blue squares"])
    with torch.no_grad():
        both = bb.predict(x, t, cond)
        singles = [bb.predict(x[i : i + 1], t[i : i + 1], _row(cond, i)) for i in range(2)]
        swapped = bb.predict(x, t.flip(0), cond)  # each sample at the other's t: routing matters
    assert _close(both, torch.cat(singles))
    assert not _close(both, swapped, ulps=1e4)


def _row(cond, i):
    if isinstance(cond, dict):
        return {k: v[i : i + 1] for k, v in cond.items()}
    return cond[i : i + 1]


def _stock(bb):
    """A fresh stock diffusers pipeline of the backbone's class over the same modules."""
    return type(bb.pipeline)(**bb.pipeline.components)


def _stock_kwargs(name: str) -> dict:
    if name.startswith("pixart"):
        return {"use_resolution_binning": False}
    return {}


@pytest.mark.parametrize("name", NAMES)
def test_stock_pipeline_runs_tsm_layers_per_sample_and_merged_alike(tsm_models, name):
    """The stock pipeline passes a 0-dim (SD) or expanded t over the CFG-doubled batch; the
    experts of t run un-merged in the forward, and agree with merging the core expert per step."""
    bb = tsm_models[name]
    pipe = _stock(bb)
    shape = (2, *bb.latent_shape(GenerateSettings(height=64, width=64)))
    prompts = ["a red circle left of a blue square", "three green triangles"]

    def run():
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        return pipe(
            prompts,
            height=64,
            width=64,
            num_inference_steps=3,
            guidance_scale=4.0,
            latents=latents,
            output_type="latent",
            **_stock_kwargs(name),
        ).images

    per_sample = run()
    seen = []

    def merge(module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        seen.append(tuple(t.shape))
        merge_timestep(bb.denoiser, float(t.reshape(-1)[0]))

    # prepend: swap experts before the backbone's own hook sets the context to this step's t
    handle = bb.denoiser.register_forward_pre_hook(merge, with_kwargs=True, prepend=True)
    try:
        merged = run()
    finally:
        handle.remove()
        unmerge_all(bb.denoiser)
    assert len(seen) == 3
    # merged W0 + BA vs W0x + B(Ax): reassociation per layer, amplified by CFG (x4) over 3 steps;
    # measured <= 14 ulps of the magnitude on x86-64, 512 leaves room for other kernels
    assert torch.isfinite(per_sample).all() and _close(per_sample, merged, ulps=512)
    with torch.no_grad():  # the experts changed the result (zero them: another image)
        saved = {n: [b.clone() for b in layer.lora_B.values()] for n, layer in tsm_layers(bb.denoiser)}
        for _, layer in tsm_layers(bb.denoiser):
            for b in layer.lora_B.values():
                b.zero_()
        base = run()
        for n, layer in tsm_layers(bb.denoiser):
            for b, s in zip(layer.lora_B.values(), saved[n], strict=True):
                b.copy_(s)
    assert not _close(per_sample, base, ulps=1e4)


def test_zero_dim_t_is_expanded_to_the_cfg_batch(tsm_models):
    bb = tsm_models["sd15-tiny"]
    x = torch.randn(4, 4, 8, 8)
    cond = bb.encode_text(["a"] * 4)
    with torch.no_grad():
        out0 = bb.unet(x, torch.tensor(700), encoder_hidden_states=cond).sample  # what the SD pipeline passes
        out1 = bb.unet(x, torch.full((4,), 700), encoder_hidden_states=cond).sample
    assert torch.equal(bb.tsm_ctx.t, torch.full((4,), 700))
    assert torch.equal(out0, out1)


def test_fuse_qkv_and_peft_are_refused_on_a_tsm_model(tsm_models):
    bb = tsm_models["sd15-tiny"]
    pipe = _stock(bb)
    with pytest.raises(TSMCompatibilityError, match="fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
    name, layer = tsm_layers(bb.unet)[0]
    lora = {
        f"unet.{name}.lora_A.weight": torch.zeros(2, layer.base.in_features),
        f"unet.{name}.lora_B.weight": torch.zeros(layer.base.out_features, 2),
    }
    with pytest.raises(TSMCompatibilityError, match="peft adapters"):
        pipe.load_lora_weights(lora)


def test_inject_refuses_peft_layers():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    bb = build_backbone("sd15-tiny")
    peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["to_q"]), bb.unet)
    with pytest.raises(ValueError, match="peft"):
        inject(bb.unet, ["to_q"], TimestepContext(), [4])


def test_text_lora_trains_through_encode_text():
    torch.manual_seed(0)
    bb = build_backbone("sd3-tiny")
    for enc_name, enc in bb.text_encoders.items():
        names = inject(enc, bb.text_targets[enc_name], None, [1], rank=2)
        assert len(names) == 4 * enc.config.num_hidden_layers  # q, k, v, out_proj of every block
        for _, layer in tsm_layers(enc):
            layer.lora_B["s1"].requires_grad_(True)
    cond = bb.encode_text(["a red circle"])
    (cond["prompt_embeds"].square().mean() + cond["pooled_prompt_embeds"].square().mean()).backward()
    for enc in bb.text_encoders.values():
        assert all(layer.lora_B["s1"].grad.abs().sum() > 0 for _, layer in tsm_layers(enc))
