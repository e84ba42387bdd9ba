"""Every registered backbone implements the protocol that train/ and generation/ rely on.

Real architectures (no ``-tiny`` suffix) are built on the ``meta`` device (attributes, presets,
registry metadata); their ``-tiny`` twins run every method once on the CPU: encode, ``sample_t``
inside the asked intervals, ``add_noise``, ``predict`` setting ``tsm_ctx``, ``loss``, the sampler
with its callback, ``decode``. Numerics per backbone live in that backbone's own tests.
"""

from __future__ import annotations

import pytest
import torch

from tsm_video.generation import GenerateSettings
from tsm_video.models import BACKBONES, Backbone, build_backbone
from tsm_video.tsm import PRESETS, IntervalSchedule, TimestepContext, inject

TINY = sorted(name for name in BACKBONES if name.endswith("-tiny"))


def test_registry_entries_are_consistent():
    assert TINY, "every family registers a -tiny twin for CPU tests"
    for name, spec in BACKBONES.items():
        assert spec.name == name and spec.modality in ("video", "image") and spec.pixel_multiple >= 1
        assert spec.source and spec.description
    with pytest.raises(ValueError, match="unknown backbone 'nope'; valid: "):
        build_backbone("nope")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_meta_build_has_the_protocol_attributes(name):
    model = build_backbone(name, device="meta")
    assert isinstance(model, Backbone)
    spec = BACKBONES[name]
    assert (model.name, model.modality) == (name, spec.modality)
    assert model.prediction in ("eps", "v", "flow")
    assert isinstance(model.continuous_time, bool) and model.num_timesteps > 0
    assert model.tsm_ctx is None
    modules = {id(m) for m in model.modules()}
    assert id(model.denoiser) in modules and model.denoiser_targets in PRESETS
    assert all(id(enc) in modules for enc in model.text_encoders.values())
    assert set(model.text_targets) <= set(model.text_encoders)
    for encoder, names in model.text_targets.items():
        present = dict(model.text_encoders[encoder].named_modules())
        assert names and all(isinstance(present.get(n), torch.nn.Linear) for n in names), (encoder, names)


@pytest.fixture(scope="module", params=TINY)
def tiny(request) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(request.param).eval()


def _pixels(model: Backbone, batch: int, g: torch.Generator) -> torch.Tensor:
    side = BACKBONES[model.name].pixel_multiple
    shape = (batch, 3, 2, side, side) if model.modality == "video" else (batch, 3, side, side)
    return torch.rand(shape, generator=g) * 2 - 1


def _settings(model: Backbone) -> GenerateSettings:
    side = BACKBONES[model.name].pixel_multiple
    return GenerateSettings(
        height=side, width=side, num_frames=2, steps=2, eta=1.0, guidance_scale=3.0, fps=8
    )


def test_sample_t_stays_inside_each_interval(tiny):
    g = torch.Generator().manual_seed(1)
    T = tiny.num_timesteps
    ids = torch.tensor([0, 3, 1, 2, 3, 0, 2, 1])
    t = tiny.sample_t(ids, 4, g)
    assert t.shape == ids.shape and t.is_floating_point() == tiny.continuous_time
    assert torch.equal(IntervalSchedule(T).interval_index(t, 4), ids)
    plain = tiny.sample_t(torch.zeros(4096, dtype=torch.long), 1, g)  # the plain training distribution
    assert plain.min() >= 0 and (plain.max() <= T if tiny.continuous_time else plain.max() < T)
    assert len(plain.unique()) > 500  # spread over [0, T), not one value


@torch.no_grad()
def test_training_step_methods(tiny):
    g = torch.Generator().manual_seed(2)
    latents = tiny.encode_pixels(_pixels(tiny, 2, g), generator=g)
    assert tuple(latents.shape[1:]) == tuple(tiny.latent_shape(_settings(tiny)))
    cond = tiny.encode_text(["a red circle", ""])
    noise = torch.randn(latents.shape, generator=g)
    t = tiny.sample_t(torch.tensor([0, 1]), 2, g)  # one sample per half of [0, T)
    x_t, target = tiny.add_noise(latents, noise, t)
    assert x_t.shape == latents.shape and target.shape == latents.shape
    assert torch.equal(tiny.add_noise(latents, noise, t)[0], x_t)  # deterministic
    if tiny.prediction == "eps":
        assert torch.equal(target, noise)
    ctx = TimestepContext(tiny.num_timesteps)
    inject(tiny.denoiser, tiny.denoiser_targets, ctx=ctx, scales=[2], rank=2, mode="foster")
    tiny.tsm_ctx = ctx
    try:
        pred = tiny.predict(x_t, t, cond)
        assert ctx.t is t  # predict hands t to the TSM layers before the forward
    finally:
        tiny.tsm_ctx = None
    assert pred.shape[0] == 2 and torch.isfinite(pred).all()
    loss = tiny.loss(pred, target)
    assert loss.shape == (2,) and loss.dtype == torch.float32 and (loss > 0).all()
    assert torch.equal(tiny.loss(target, target), torch.zeros(2))


@torch.no_grad()
def test_sampler_callback_and_decode(tiny):
    settings = _settings(tiny)
    shape = tiny.latent_shape(settings)

    def run() -> tuple[torch.Tensor, list]:
        generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
        x_T = torch.stack([torch.randn(shape, generator=g) for g in generators])
        calls = []
        z = tiny.sample(
            x_T,
            tiny.encode_text(["a", "b"]),
            tiny.encode_text([""]),
            settings,
            generators,
            callback=lambda i, t: calls.append((i, float(t))),
        )
        return z, calls

    z, calls = run()
    assert z.shape == (2, *shape) and torch.isfinite(z).all()
    steps = [i for i, _ in calls]
    assert steps == list(range(len(steps))) and len(steps) >= settings.steps - 1
    ts = [t for _, t in calls]
    assert ts == sorted(ts, reverse=True) and ts[-1] >= 0 and ts[0] <= tiny.num_timesteps
    assert torch.equal(run()[0], z)  # the generators make it reproducible
    pixels = tiny.decode(z)
    assert pixels.shape == _pixels(tiny, 2, torch.Generator()).shape
