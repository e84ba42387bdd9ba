"""`generate.precision`: fp32 by default (VC2's own sampler), bf16/fp16 opt-in, independent of the
training precision, part of the settings recorded in generate.json.

Tolerance: a bf16 clip must be finite, differ from the fp32 one, and stay within 0.5 of it. The
random tiny model decodes to values of magnitude ~2.6; the measured gap after 2 DDIM steps with
CFG 3 is 0.025 (~1 % of the magnitude: bf16 keeps 8 mantissa bits, 2^-8 ≈ 0.4 % per rounding,
accumulated over the UNet and VAE); 0.5 (~20 %) only catches a broken cast or overflow. fp32
under the context must equal the plain sampler bit for bit.
"""

from __future__ import annotations

import json

import pytest
import torch

from tsm_video.config import parse_config
from tsm_video.generation.runner import ManifestError, check_manifest
from tsm_video.generation.sampling import generate_clips
from tsm_video.generation.settings import GenerateSettings, SettingsError, precision_context
from tsm_video.models import build_backbone


def test_default_is_fp32_whatever_the_training_precision():
    cfg = parse_config({"model": {"mixed_precision": "bf16"}})
    settings = GenerateSettings.from_config(cfg.generate)
    assert cfg.generate.precision == "fp32" and settings.precision == "fp32"
    assert GenerateSettings.from_config(cfg.generate, precision="bf16").precision == "bf16"
    cfg = parse_config({"generate": {"precision": "fp16"}})
    assert GenerateSettings.from_config(cfg.generate).precision == "fp16"
    with pytest.raises(ValueError, match="generate.precision"):
        parse_config({"generate": {"precision": "int8"}})
    with pytest.raises(SettingsError, match="--precision fp8"):
        GenerateSettings(precision="fp8").validate(8)


def test_precision_is_recorded_in_the_manifest(tmp_path):
    settings = GenerateSettings(height=32, width=32)
    check_manifest(tmp_path, {"seed": 1, "settings": settings.to_dict()})
    assert json.loads((tmp_path / "generate.json").read_text())["settings"]["precision"] == "fp32"
    (tmp_path / "0000.mp4").write_bytes(b"")  # a finished clip binds the folder to its settings
    other = GenerateSettings(height=32, width=32, precision="bf16")
    with pytest.raises(ManifestError, match="precision"):
        check_manifest(tmp_path, {"seed": 1, "settings": other.to_dict()})


def test_precision_context_sets_the_sampler_arithmetic():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(3, 8)
    with precision_context("fp32", "cpu"):
        assert torch.equal(layer(x), layer(x)) and layer(x).dtype == torch.float32
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with precision_context(name, "cpu"):
            assert layer(x).dtype == dtype


def test_bf16_clip_differs_from_fp32_and_fp32_is_the_plain_sampler():
    torch.manual_seed(0)
    model = build_backbone("vc2-tiny").eval().requires_grad_(False)
    settings = GenerateSettings(height=32, width=32, num_frames=2, steps=2, guidance_scale=3.0, fps=8)
    plain = generate_clips(model, ["a red circle"], [7], settings)
    with precision_context("fp32", "cpu"):
        fp32 = generate_clips(model, ["a red circle"], [7], settings)
    with precision_context("bf16", "cpu"):
        bf16 = generate_clips(model, ["a red circle"], [7], settings)
    assert torch.equal(plain, fp32)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    gap = (bf16 - fp32).abs().max().item()
    assert 0 < gap < 0.5
