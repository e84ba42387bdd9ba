"""VC2TextEncoder against the official FrozenOpenCLIPEmbedder (text_tiny fixture) and LoRA on out_proj."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.models.vc2.text_encoder import VC2TextEncoder, tokenize

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vc2"
PREFIX = "cond_stage_model.model."
TINY = {"width": 64, "heads": 4, "layers": 3, "embed_dim": 64}


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "text_tiny.safetensors")


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return json.loads((FIXTURES / "text_tiny.json").read_text())["prompts"]


def _encoder(ref, layer: str = "penultimate") -> VC2TextEncoder:
    encoder = VC2TextEncoder(**TINY, layer=layer)
    encoder.load_state_dict({k.removeprefix(PREFIX): v for k, v in ref.items() if k.startswith(PREFIX)})
    return encoder.eval()


def test_tokens_match_open_clip_2_22(ref, prompts):
    tokens = tokenize(prompts)
    assert torch.equal(tokens, ref["input.tokens"])  # sot 49406, eot 49407, pad 0
    assert tokens[1, :3].tolist() == [49406, 49407, 0]


@pytest.mark.parametrize(("layer", "key"), [("penultimate", "output.z"), ("last", "output.z_last_layer")])
def test_output_matches_official(ref, prompts, layer, key):
    with torch.no_grad():
        z = _encoder(ref, layer).encode(prompts)
    assert z.shape == (3, 77, 64)
    # tolerance: 1e-5 abs (observed ~1.2e-6: SDPA vs MultiheadAttention's masked path)
    assert (z - ref[key]).abs().max() <= 1e-5


def test_state_dict_keys_are_open_clip_text_keys(ref):
    ours = VC2TextEncoder(**TINY).state_dict()
    theirs = {k.removeprefix(PREFIX): tuple(v.shape) for k, v in ref.items() if k.startswith(PREFIX)}
    assert {k: tuple(v.shape) for k, v in ours.items()} == theirs


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="layer must be one of"):
        VC2TextEncoder(**TINY, layer="pooled")
    with pytest.raises(ValueError, match="divisible"):
        VC2TextEncoder(width=64, heads=5, layers=2, embed_dim=64)
    encoder = VC2TextEncoder(**TINY)
    with pytest.raises(ValueError, match="tokens must be"):
        encoder(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a single string")


def test_lora_on_out_proj_changes_output_and_trains(ref, prompts):
    tsm = pytest.importorskip("tsm_video.tsm")
    encoder = _encoder(ref)
    with torch.no_grad():
        before = encoder.encode(prompts)
    names = tsm.inject(encoder, "vc2-text", ctx=None, scales=[1], rank=2, alpha=2.0, mode="foster")
    assert names == [f"transformer.resblocks.{i}.attn.out_proj" for i in range(3)]
    tsm.configure_stage(encoder, "lora")
    with torch.no_grad():  # zero-init B: identical output until B moves off zero
        assert torch.equal(encoder.encode(prompts), before)
        for name, param in tsm.trainable_parameters(encoder):
            if "lora_B" in name:
                param.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
        after = encoder.encode(prompts)
    assert (after - before).abs().max() > 1e-3
    encoder.encode(prompts).square().mean().backward()
    trained = dict(tsm.trainable_parameters(encoder))
    # blocks 0 and 1 feed the penultimate output; block 2 (the last) is skipped by design
    used = {n for n in trained if not n.startswith("transformer.resblocks.2.")}
    assert used and all(trained[n].grad is not None and trained[n].grad.abs().sum() > 0 for n in used)
    frozen = [n for n, p in encoder.named_parameters() if n not in trained]
    assert all(encoder.get_parameter(n).grad is None for n in frozen)
