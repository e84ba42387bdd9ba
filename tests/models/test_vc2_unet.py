"""VC2UNet equals the official LVDM UNet: fixture parity and the real checkpoint's key/shape manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vc2"
PREFIX = "model.diffusion_model."
# Fixture noise floor (official code, 1 vs 2 threads) is 6.3e-7 on |eps| <= 0.93; we allow 1e-5.
EPS_ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    meta = json.loads((FIXTURES / "unet_tiny.json").read_text())
    tensors = load_file(FIXTURES / "unet_tiny.safetensors")
    state = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    unet = VC2UNet.from_lvdm_config(meta["constructor_params"]).eval()
    unet.load_state_dict(state, strict=True)
    return unet, tensors


def _run(unet, tensors):
    with torch.no_grad():
        x, t, context = tensors["input.x"], tensors["input.timesteps"], tensors["input.context"]
        return unet(x, t, context, fps=tensors["input.fps"])


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_tiny_unet_matches_official_eps(tiny, backend):
    unet, tensors = tiny
    unet.set_attention_backend(backend)
    eps = _run(unet, tensors)
    assert eps.shape == tensors["output.eps"].shape
    assert eps.dtype == torch.float32
    assert (eps - tensors["output.eps"]).abs().max().item() <= EPS_ATOL


def test_tiny_unet_intermediate_activations(tiny):
    unet, tensors = tiny
    unet.set_attention_backend("math")
    debug = load_file(FIXTURES / "unet_tiny_debug.safetensors")
    captured: dict[str, torch.Tensor] = {}
    stages = {f"input_blocks.{i}": m for i, m in enumerate(unet.input_blocks)}
    stages |= {f"output_blocks.{i}": m for i, m in enumerate(unet.output_blocks)}
    stages |= {"middle_block": unet.middle_block, "init_attn": unet.init_attn}
    stages |= {"time_embed": unet.time_embed, "fps_embedding": unet.fps_embedding}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name, module in stages.items()
    ]
    try:
        _run(unet, tensors)
    finally:
        for handle in handles:
            handle.remove()
    expected_names = {f"debug.{name}_out" for name in stages}
    assert expected_names <= set(debug)
    for name in stages:
        ref = debug[f"debug.{name}_out"]
        assert captured[name].shape == ref.shape, name
        assert (captured[name] - ref).abs().max().item() <= 2e-5, name


def test_sinusoidal_embeddings_match(tiny):
    from tsm_video.models.vc2.embeddings import timestep_embedding

    _, tensors = tiny
    debug = load_file(FIXTURES / "unet_tiny_debug.safetensors")
    t_emb = timestep_embedding(tensors["input.timesteps"], 32)
    fps_emb = timestep_embedding(tensors["input.fps"], 32)
    torch.testing.assert_close(t_emb, debug["debug.t_emb_sinusoidal"], rtol=0, atol=1e-6)
    torch.testing.assert_close(fps_emb, debug["debug.fps_emb_sinusoidal"], rtol=0, atol=1e-6)


def test_real_config_matches_checkpoint_manifest():
    manifest = json.loads((FIXTURES / "vc2_full_manifest.json").read_text())
    part = manifest["parts"]["unet"]
    official = manifest["config"]["model"]["params"]["unet_config"]["params"]
    assert official == VC2_UNET_PARAMS
    unet = VC2UNet.from_lvdm_config(VC2_UNET_PARAMS, device="meta")
    ours = [(k, list(v.shape)) for k, v in unet.state_dict().items()]
    expected = [(k[len(PREFIX) :], shape) for k, shape, _dtype in part["keys"]]
    assert len(ours) == part["num_keys"] == 1484
    assert ours == expected  # same keys, same shapes, same order
    assert sum(p.numel() for p in unet.parameters()) == part["num_params"] == 1_413_284_420
    assert unet.init_attn[0].proj_in.weight.shape == (512, 320, 1)  # Conv1d, 8 heads x 64
