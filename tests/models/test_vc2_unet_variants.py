"""VC2UNet equals the official LVDM UNet on flag combinations beyond VC2's (fixture unet_variants.*).

Weights are rebuilt from keys and a seed (see tests/tools/make_unet_variants.py), so this also
checks that every variant's state-dict keys and shapes equal the official ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.models.vc2 import VC2UNet

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vc2"
_spec = importlib.util.spec_from_file_location(
    "make_unet_variants", Path(__file__).resolve().parent.parent / "tools" / "make_unet_variants.py"
)
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)

RECORD = json.loads((FIXTURES / "unet_variants.json").read_text())
# |eps| <= 2.7 here; float32 reordering differences are ~1e-6.
ATOL = 1e-5


@pytest.fixture(scope="module")
def tensors():
    return load_file(FIXTURES / "unet_variants.safetensors")


@pytest.mark.parametrize("name", list(variants.VARIANTS))
def test_variant_matches_official(name, tensors):
    params = RECORD["constructor_params"][name]
    assert params == variants.variant_params(name)
    unet = VC2UNet.from_lvdm_config(params).eval()
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    index = list(variants.VARIANTS).index(name)
    unet.load_state_dict(variants.seeded_state_dict(shapes, seed=100 + index), strict=True)
    x, context = tensors[f"{name}.input.x"], tensors[f"{name}.input.context"]
    t, fps = torch.tensor(RECORD["timesteps"]), torch.tensor(RECORD["fps"])
    unet.set_attention_backend("math")  # the reference path; SDPA is compared in test_vc2_unet*.py
    with torch.no_grad():
        eps = unet(x, t, context, fps=fps)
    diff = (eps - tensors[f"{name}.output.eps"]).abs().max().item()
    assert diff <= ATOL, (name, diff)
