"""VC2Schedule against the official LatentDiffusion buffers and q_sample (ddim_tiny fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.diffusion import CHECKPOINT_BUFFERS, SCHEDULES, VC2Schedule, eps_mse_loss

FIXTURE = Path(__file__).parents[1] / "fixtures" / "vc2" / "ddim_tiny.safetensors"


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


def test_every_schedule_buffer_matches_official(ref):
    schedule = VC2Schedule()
    names = {k.removeprefix("schedule.") for k in ref if k.startswith("schedule.")}
    assert names == set(CHECKPOINT_BUFFERS)
    for name in names:
        ours = getattr(schedule, name)
        # tolerance: exact (same float64 math, cast to float32 once)
        assert ours.dtype == torch.float32 and torch.equal(ours, ref[f"schedule.{name}"]), name
    assert schedule.scale_arr.shape == (1400,)  # fix_scale_bug=False length
    assert set(schedule.checkpoint_buffers()) == set(CHECKPOINT_BUFFERS)


def test_closed_forms():
    schedule = VC2Schedule()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(schedule.betas.double(), betas, rtol=1e-7, atol=0)  # float32 rounding
    assert torch.allclose(schedule.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-6, atol=0)
    assert schedule.scale_arr[0] == 1.0 and torch.all(schedule.scale_arr[399:] == torch.tensor(0.7))
    fixed = VC2Schedule(fix_scale_bug=True)
    assert fixed.scale_arr.shape == (1000,)
    assert not hasattr(VC2Schedule(use_scale=False), "scale_arr")
    assert SCHEDULES["vc2"] is VC2Schedule


def test_q_sample_matches_official(ref):
    x_t = VC2Schedule().q_sample(ref["qsample.x0"], ref["qsample.t"], ref["qsample.noise"])
    assert ref["qsample.t"].tolist() == [0, 1, 399, 400, 500, 999]
    # tolerance: exact (same operation order in float32)
    assert torch.equal(x_t, ref["qsample.x_t"])


def test_q_sample_without_scale_and_dtype():
    schedule = VC2Schedule(use_scale=False)
    x0 = torch.randn(2, 4, 3, 2, 2, dtype=torch.bfloat16)
    noise = torch.randn_like(x0)
    t = torch.tensor([5, 700])
    x_t = schedule.q_sample(x0, t, noise)
    assert x_t.dtype == torch.bfloat16
    expected = schedule.sqrt_alphas_cumprod[t].view(2, 1, 1, 1, 1) * x0.float()
    expected = expected + schedule.sqrt_one_minus_alphas_cumprod[t].view(2, 1, 1, 1, 1) * noise.float()
    assert torch.allclose(x_t.float(), expected, atol=2e-2)  # tolerance: one bf16 rounding


def test_q_sample_bad_input():
    schedule = VC2Schedule()
    x0 = torch.zeros(2, 4, 1, 2, 2)
    with pytest.raises(ValueError, match="t must have shape"):
        schedule.q_sample(x0, torch.tensor([1, 2, 3]), x0)
    with pytest.raises(ValueError, match="noise shape"):
        schedule.q_sample(x0, torch.tensor([1, 2]), x0[:1])
    with pytest.raises(ValueError, match="mid_step"):
        VC2Schedule(mid_step=2000)
    with pytest.raises(ValueError, match="linear_start"):
        VC2Schedule(linear_start=0.1, linear_end=0.01)


def test_eps_mse_loss_per_sample():
    pred = torch.zeros(3, 2, 2)
    target = torch.stack([torch.full((2, 2), v) for v in (1.0, 2.0, 3.0)])
    per_sample = eps_mse_loss(pred, target, reduction="none")
    assert per_sample.tolist() == [1.0, 4.0, 9.0]
    assert eps_mse_loss(pred, target).item() == pytest.approx(14.0 / 3)
    assert torch.allclose(eps_mse_loss(pred, target), torch.nn.functional.mse_loss(pred, target))
    with pytest.raises(ValueError, match="reduction"):
        eps_mse_loss(pred, target, reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        eps_mse_loss(pred, target[:2])
