"""VC2VAE against the official AutoencoderKL (vae_tiny) and decode_first_stage_2DAE (ddim_tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.models.vc2.vae import VC2VAE

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vc2"
PREFIX = "first_stage_model."


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "vae_tiny.safetensors")


@pytest.fixture(scope="module")
def vae(ref) -> VC2VAE:
    params = json.loads((FIXTURES / "vae_tiny.json").read_text())["constructor_params"]
    model = VC2VAE(embed_dim=params["embed_dim"], **params["ddconfig"])
    model.load_state_dict({k.removeprefix(PREFIX): v for k, v in ref.items() if k.startswith(PREFIX)})
    return model.eval()


def test_encoder_moments_match_official(vae, ref):
    with torch.no_grad():
        moments = vae.moments(ref["input.x"])
    mean, logvar = vae.posterior(moments)
    # tolerance: 1e-5 abs (observed <= 1.8e-6; reference's own thread-count floor for mean: 3.7e-7)
    for name, ours in [
        ("moments", moments),
        ("mean", mean),
        ("logvar", logvar),
        ("std", (0.5 * logvar).exp()),
    ]:
        assert (ours - ref[f"output.{name}"]).abs().max() <= 1e-5, name


def test_decoder_matches_official(vae, ref):
    with torch.no_grad():
        dec = vae.decode_images(ref["output.mean"])
    # tolerance: 1e-5 relative to max|dec| (2.3): observed <= 7.3e-6 abs, which varies run to run;
    # the reference's own 1-vs-2-thread floor is 3.9e-6
    assert (dec - ref["output.dec"]).abs().max() <= 1e-5 * ref["output.dec"].abs().max()


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_video_decode_matches_decode_first_stage_2dae(vae, chunk_size):
    ddim = load_file(FIXTURES / "ddim_tiny.safetensors")
    with torch.no_grad():
        video = vae.decode(ddim["output.x0"], chunk_size=chunk_size)
    assert video.shape == (1, 3, 8, 32, 32)
    # tolerance: 1e-5 relative to max|video| (2.06): observed ~1.5e-6 abs; reference floor 2.4e-6
    assert (video - ddim["output.video"]).abs().max() <= 1e-5 * ddim["output.video"].abs().max()


def test_video_encode_mean_and_sample(vae, ref):
    frames = ref["input.x"]  # two frames → one 2-frame video
    video = frames.permute(1, 0, 2, 3).unsqueeze(0)  # (1, 3, 2, 32, 32): c t h w
    assert torch.equal(video[0, :, 1], frames[1])
    with torch.no_grad():
        z = vae.encode(video, sample=False, chunk_size=1)
        expected = vae.posterior(vae.moments(frames))[0] * 0.18215
        assert z.shape == (1, 4, 2, 16, 16)
        assert torch.allclose(z[0].transpose(0, 1), expected, atol=1e-6)  # tolerance: chunking only
        s1 = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
        s2 = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
        assert torch.equal(s1, s2) and not torch.allclose(s1, z)
        # a sample is mean + std·ε: its distance from the mean is bounded by the posterior's spread
        std = (0.5 * vae.posterior(vae.moments(frames))[1]).exp() * 0.18215
        assert ((s1 - z)[0].transpose(0, 1).abs() <= 6 * std + 1e-6).all()


def test_bad_input_and_config(vae):
    with pytest.raises(ValueError, match="pixels must be"):
        vae.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        vae.encode(torch.zeros(1, 3, 1, 31, 32))
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="double_z"):
        VC2VAE(double_z=False)
    with pytest.raises(TypeError):
        VC2VAE.from_config({"ch": 32, "bogus": 1})
