"""Image backbones' training objectives against closed forms and diffusers' own formulas, and
loading from a local diffusers folder (tiny models written with ``save_pretrained``)."""

from __future__ import annotations

import math

import pytest
import torch

from tsm_video.models import BACKBONES, build_backbone
from tsm_video.models.image import ImageBackboneError, StableDiffusionBackbone
from tsm_video.models.image.components import build_components
from tsm_video.models.registry import MissingWeightsError

EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def tiny():
    """One seeded tiny backbone per family (built once per module)."""
    built = {}

    def get(name: str):
        if name not in built:
            torch.manual_seed(0)
            built[name] = build_backbone(name)
        return built[name]

    return get


def _alphas_cumprod(beta_start: float, beta_end: float, schedule: str) -> torch.Tensor:
    """ᾱ_t in float64 from the beta schedule's definition (LDM scaled_linear / DDPM linear)."""
    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, 1000, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(beta_start, beta_end, 1000, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def _data(shape=(3, 4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _tol(*tensors: torch.Tensor) -> float:
    """A few float32 ulps of the largest magnitude involved (the float32 noising arithmetic)."""
    return 8 * EPS32 * max(float(t.abs().max()) for t in tensors)


def test_registry_names_and_specs():
    for name in ("sd15", "sd2", "pixart-alpha", "sd3"):
        for n in (name, f"{name}-tiny"):
            assert BACKBONES[n].modality == "image"
        assert "huggingface.co" in BACKBONES[name].release
    assert BACKBONES["sd15"].pixel_multiple == 8
    assert BACKBONES["pixart-alpha"].pixel_multiple == BACKBONES["sd3"].pixel_multiple == 16


@pytest.mark.parametrize(
    "name,beta_start,beta_end,schedule",
    [("sd15-tiny", 0.00085, 0.012, "scaled_linear"), ("pixart-alpha-tiny", 0.0001, 0.02, "linear")],
)
def test_eps_noising_matches_closed_form(tiny, name, beta_start, beta_end, schedule):
    bb = tiny(name)
    assert bb.prediction == "eps" and not bb.continuous_time
    x0, noise = _data()
    t = torch.tensor([0, 499, 999])
    x_t, target = bb.add_noise(x0, noise, t)
    a = _alphas_cumprod(beta_start, beta_end, schedule)[t].view(-1, 1, 1, 1)
    expect = a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()
    assert torch.allclose(x_t.double(), expect, rtol=0, atol=_tol(x0, noise))
    assert torch.equal(target, noise)


def test_sd2_v_target_matches_closed_form_and_get_velocity(tiny):
    bb = tiny("sd2-tiny")
    assert bb.prediction == "v"  # the 768-v release's scheduler config says v_prediction
    x0, noise = _data()
    t = torch.tensor([3, 500, 998])
    _, v = bb.add_noise(x0, noise, t)
    a = _alphas_cumprod(0.00085, 0.012, "scaled_linear")[t].view(-1, 1, 1, 1)
    expect = a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double()
    assert torch.allclose(v.double(), expect, rtol=0, atol=_tol(x0, noise))
    assert torch.equal(v, bb.train_scheduler.get_velocity(x0, noise, t))


def test_sd2_prediction_is_read_from_the_scheduler_config():
    parts = build_components("sd2-tiny")
    parts["scheduler"] = type(parts["scheduler"]).from_config(
        parts["scheduler"].config, prediction_type="epsilon"
    )
    bb = StableDiffusionBackbone("sd2-tiny", parts)
    x0, noise = _data()
    assert bb.prediction == "eps" and torch.equal(bb.add_noise(x0, noise, torch.tensor([1, 2, 3]))[1], noise)


def test_pixart_variance_channels_are_dropped_from_the_loss(tiny):
    bb = tiny("pixart-alpha-tiny")
    assert bb.transformer.config.out_channels == 2 * bb.transformer.config.in_channels
    x0, noise = _data((2, 4, 8, 8))
    pred = torch.randn(2, 8, 8, 8, requires_grad=True)
    loss = bb.loss(pred, noise)
    eps, _ = pred.detach().chunk(2, dim=1)  # diffusers' PixArt training: model_pred.chunk(2, dim=1)[0]
    assert torch.allclose(loss, ((eps - noise) ** 2).mean(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    loss.sum().backward()
    assert torch.count_nonzero(pred.grad[:, 4:]) == 0 and torch.count_nonzero(pred.grad[:, :4]) > 0


def test_sd3_flow_noising_matches_scale_noise(tiny):
    from diffusers import FlowMatchEulerDiscreteScheduler

    bb = tiny("sd3-tiny")
    assert bb.prediction == "flow" and bb.continuous_time
    sched = FlowMatchEulerDiscreteScheduler.from_config(bb.scheduler.config)  # the training grid
    t = sched.timesteps[torch.tensor([0, 311, 998])]
    x0, noise = _data()
    x_t, target = bb.add_noise(x0, noise, t)
    ref = sched.scale_noise(x0, t, noise)  # σ·ε + (1-σ)·x0 with σ looked up on the grid
    # σ = t/1000 vs the grid's float32 σ: one ulp of σ (≤ 1) times |ε - x0|, plus the float32 sum
    assert torch.allclose(x_t, ref, rtol=0, atol=_tol(x0, noise, noise - x0))
    assert torch.equal(target, noise - x0)
    # the transformer receives t = σ·1000 as a float
    seen = []
    handle = bb.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["timestep"]), with_kwargs=True
    )
    try:
        cond = bb.encode_text(["a", "b", "c"])
        bb.predict(x_t, t, cond)
    finally:
        handle.remove()
    assert seen[0].is_floating_point() and torch.equal(seen[0], t)


def test_sd3_sample_t_follows_the_logit_normal_recipe(tiny):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    flow = tiny("sd3-tiny").flow
    n, scale = 200_000, 8
    u = compute_density_for_timestep_sampling(
        "logit_normal", n, logit_mean=0.0, logit_std=1.0, generator=torch.Generator().manual_seed(0)
    )
    ref_t = flow.grid[(u * 1000).long()]  # diffusers: indices = (u·T).long(); t = timesteps[indices]
    ref_share = torch.bincount(flow._schedule.interval_index(ref_t, scale), minlength=scale).double() / n
    mass = torch.zeros(scale, dtype=torch.float64).index_add_(0, flow.interval_ids(scale), flow.mass)
    # binomial standard error of each share, 5σ (a fixed seed: deterministic)
    assert torch.all((ref_share - mass).abs() <= 5 * (mass * (1 - mass) / n).sqrt())
    assert math.isclose(float(flow.mass.sum()), 1.0, rel_tol=1e-12)
    # scale 1 (the plain distribution) vs diffusers' draws: equal means within 5 standard errors
    g = torch.Generator().manual_seed(1)
    t1 = tiny("sd3-tiny").sample_t(torch.zeros(n, dtype=torch.long), 1, g).double()
    assert abs(t1.mean() - ref_t.double().mean()) <= 5 * math.sqrt(2 / n) * float(ref_t.double().std())
    # each interval draws only its own σ range, with the restricted distribution's mean
    ids = torch.arange(scale).repeat(2000)
    t = tiny("sd3-tiny").sample_t(ids, scale, g)
    assert t.dtype == torch.float32
    assert torch.equal(flow._schedule.interval_index(t, scale), ids)
    for i in range(scale):
        inside = flow.interval_ids(scale) == i
        p = flow.mass[inside] / flow.mass[inside].sum()
        grid = flow.grid[inside].double()
        mean, std = float((p * grid).sum()), float((p * (grid - (p * grid).sum()) ** 2).sum().sqrt())
        assert abs(float(t[ids == i].double().mean()) - mean) <= 5 * std / math.sqrt(2000) + 1e-9


def test_ddpm_sample_t_is_uniform_in_the_interval(tiny):
    bb = tiny("sd15-tiny")
    g = torch.Generator().manual_seed(0)
    t = bb.sample_t(torch.tensor([0, 3, 7, 7]), 8, g)
    assert t.dtype == torch.long
    assert [int(x) // 125 for x in t] == [0, 3, 7, 7]


def test_local_folder_roundtrip_and_missing_file_error(tiny, tmp_path):
    bb = tiny("sd15-tiny")
    bb.pipeline.save_pretrained(tmp_path / "sd", safe_serialization=True)
    loaded = build_backbone("sd15-tiny", checkpoint=tmp_path / "sd")
    for (k, a), (k2, b) in zip(bb.unet.state_dict().items(), loaded.unet.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert loaded.encode_text(["a red circle"]).shape == bb.encode_text(["a red circle"]).shape
    (tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(
        ImageBackboneError,
        match=r"unet/diffusion_pytorch_model\.safetensors is missing.*"
        r"huggingface\.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
    ):
        build_backbone("sd15", checkpoint=tmp_path / "sd")
    with pytest.raises(MissingWeightsError, match="not found.*stable-diffusion-3-medium-diffusers"):
        build_backbone("sd3", checkpoint=tmp_path / "nowhere")
