"""DDIM sampler against every recorded step of the official DDIMSampler (ddim_tiny fixture).

First with a replay denoiser that returns the official ε for each call (pure sampler math), then
end to end with the tiny VC2UNet loaded from unet_tiny.safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.diffusion import VC2Schedule, ddim_sample, ddim_step, ddim_tables, ddim_timesteps
from tsm_video.models.vc2 import VC2VAE, VC2UNet

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vc2"
STEPS, GUIDANCE = 5, 12.0
F32_EPS = torch.finfo(torch.float32).eps  # 1.19e-7: one ulp at 1.0


def within_ulps(x: torch.Tensor, ref: torch.Tensor, ulps: float) -> bool:
    """|x - ref| <= ulps float32 ulps of max|ref|.

    A DDIM update is ~6 float32 ops per element (two products with the table coefficients, CFG
    mix, sums); each rounds by ≤ 0.5 ulp, and a CPU may or may not fuse them (FMA, AVX2 vs
    AVX-512, thread split), so one step may differ by a few ulps of the magnitude, and replayed
    steps accumulate it. A wrong coefficient or timestep changes x by ≥ 1e-3 relative.
    """
    return bool((x - ref).abs().max() <= ulps * F32_EPS * ref.abs().max())


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "ddim_tiny.safetensors")


class ReplayDenoiser:
    """Returns the official e_cond / e_uncond of each step; records what the sampler passed in."""

    def __init__(self, ref: dict[str, torch.Tensor]) -> None:
        self.ref, self.calls = ref, []

    def __call__(self, x, t, context, fps):
        step = self.ref["ddim.timesteps_in_sampling_order"].tolist().index(int(t[0]))
        self.calls.append((x.clone(), step, fps.clone()))
        assert torch.equal(t, self.ref[f"step.{step}.t"].expand(x.shape[0]))
        eps = []
        for ctx in context:  # one row per sample: the official e of whichever context it is
            is_cond = torch.equal(ctx, self.ref["input.c"][0])
            assert is_cond or torch.equal(ctx, self.ref["input.uc"][0])
            eps.append(self.ref[f"step.{step}.e_cond" if is_cond else f"step.{step}.e_uncond"])
        return torch.cat(eps)


def test_ddim_tables_match_official(ref):
    tables = ddim_tables(VC2Schedule(), STEPS, eta=0.0)
    assert tables.timesteps.tolist() == [1, 201, 401, 601, 801]
    assert torch.equal(tables.timesteps, ref["ddim.timesteps"])
    assert torch.equal(tables.timesteps.flip(0), ref["ddim.timesteps_in_sampling_order"])
    pairs = {
        "alphas": tables.alphas,
        "alphas_prev": tables.alphas_prev,
        "sqrt_one_minus_alphas": tables.sqrt_one_minus_alphas,
        "sigmas": tables.sigmas,
        "scale_arr": tables.scale,
        "scale_arr_prev": tables.scale_prev,
    }
    for name, ours in pairs.items():
        assert torch.equal(ours, ref[f"ddim.{name}"]), name  # tolerance: exact


def test_ddim_timesteps_and_sigmas_closed_form():
    assert ddim_timesteps(50).tolist() == list(range(1, 1000, 20))
    assert len(ddim_timesteps(30)) == 31  # the official uniform discretisation keeps range()'s length
    schedule = VC2Schedule()
    tables = ddim_tables(schedule, 10, eta=1.0)
    a, a_prev = tables.alphas.double(), tables.alphas_prev.double()
    sigma = torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    assert torch.allclose(tables.sigmas.double(), sigma, rtol=1e-5)  # float32 rounding of (1 - a)
    assert tables.alphas_prev[0] == schedule.alphas_cumprod[0]
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_timesteps(0)
    with pytest.raises(ValueError, match="num_timesteps"):
        ddim_tables(schedule, 1000, eta=0.0)


def test_every_step_update_matches_official(ref):
    tables = ddim_tables(VC2Schedule(), STEPS, eta=0.0)
    for i in range(STEPS):
        e_c, e_u = ref[f"step.{i}.e_cond"], ref[f"step.{i}.e_uncond"]
        x_prev, pred_x0 = ddim_step(
            ref[f"step.{i}.x_in"], e_u + GUIDANCE * (e_c - e_u), tables, STEPS - 1 - i
        )
        # tolerance: 8 ulps of max|x| (one step's rounding, fused or not; observed exact here)
        assert within_ulps(pred_x0, ref[f"step.{i}.pred_x0"], 8), i
        assert within_ulps(x_prev, ref[f"step.{i}.x_out"], 8), i


@pytest.mark.parametrize("batched_cfg", [False, True])
def test_sampler_replays_official_run(ref, batched_cfg):
    denoiser = ReplayDenoiser(ref)
    seen = []
    x0 = ddim_sample(
        denoiser,
        ref["input.x_T"],
        cond=ref["input.c"],
        uncond=ref["input.uc"],
        fps=ref["input.fps"],
        steps=STEPS,
        eta=0.0,
        guidance_scale=GUIDANCE,
        schedule=VC2Schedule(),
        callback=lambda i, t: seen.append((i, t, len(denoiser.calls))),
        batched_cfg=batched_cfg,
    )
    calls_per_step = 1 if batched_cfg else 2
    assert len(denoiser.calls) == STEPS * calls_per_step
    # the callback runs before the denoiser of its step
    assert seen == [(i, 801 - 200 * i, i * calls_per_step) for i in range(STEPS)]
    for i in range(STEPS):
        x_in, _, fps = denoiser.calls[i * calls_per_step]
        assert torch.equal(fps, torch.full((x_in.shape[0],), 28))  # fps in both CFG branches
        # tolerance: 8 ulps of max|x| per replayed step (errors of earlier steps carry over;
        # a fresh machine measured 1.9e-6 = 0.5 ulps of 3.6 at step 2)
        assert within_ulps(x_in[:1], ref[f"step.{i}.x_in"], 8 * (i + 1)), i
    assert within_ulps(x0, ref["output.x0"], 8 * (STEPS + 1))


def test_eta_noise_is_seeded_and_guidance_one_is_single_call():
    def denoiser(x, t, context, fps):
        return 0.1 * x + context.mean() * 0

    x_T = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(2, 5, 8)

    def run(seed):
        return ddim_sample(
            denoiser,
            x_T,
            cond,
            None,
            fps=8,
            steps=4,
            eta=1.0,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))
    with pytest.raises(ValueError, match="cond batch"):
        ddim_sample(denoiser, x_T, cond[:1], None, fps=8, steps=2)
    with pytest.raises(ValueError, match="uncond shape"):
        ddim_sample(denoiser, x_T, cond, torch.zeros(2, 5, 9), fps=8, steps=2)


def _tiny_unet() -> VC2UNet:
    params = json.loads((FIXTURES / "unet_tiny.json").read_text())["constructor_params"]
    unet = VC2UNet.from_lvdm_config(params)
    prefix = "model.diffusion_model."
    weights = load_file(FIXTURES / "unet_tiny.safetensors")
    unet.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)})
    return unet.eval()


def _tiny_vae() -> VC2VAE:
    params = json.loads((FIXTURES / "vae_tiny.json").read_text())["constructor_params"]
    vae = VC2VAE(embed_dim=params["embed_dim"], **params["ddconfig"])
    prefix = "first_stage_model."
    weights = load_file(FIXTURES / "vae_tiny.safetensors")
    vae.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)})
    return vae.eval()


@pytest.mark.slow
@pytest.mark.parametrize("batched_cfg", [False, True])
def test_end_to_end_with_tiny_unet_and_vae(ref, batched_cfg):
    x0 = ddim_sample(
        _tiny_unet(),
        ref["input.x_T"],
        cond=ref["input.c"],
        uncond=ref["input.uc"],
        fps=ref["input.fps"],
        steps=STEPS,
        eta=0.0,
        guidance_scale=GUIDANCE,
        schedule=VC2Schedule(),
        batched_cfg=batched_cfg,
    )
    # tolerance: 1e-4 relative to max|x0| (33): observed 6.4e-5 abs (two calls) / 5.7e-5 (batched),
    # i.e. ~2e-6 relative; the reference's own 1-vs-2-thread floor is 3.9e-5 abs
    assert (x0 - ref["output.x0"]).abs().max() <= 1e-4 * ref["output.x0"].abs().max()
    with torch.no_grad():
        video = _tiny_vae().decode(x0)
    # tolerance: 1e-5 relative to max|video| (2.06): observed 4.2e-6 abs (reference floor 2.4e-6)
    assert (video - ref["output.video"]).abs().max() <= 1e-5 * ref["output.video"].abs().max()
