"""``tsm-video export lora``: a TSM interval expert loaded by stock tools equals the TSM model
with that interval merged (SD1.5 and SD3 via ``pipe.load_lora_weights``, PixArt-α via peft)."""

from __future__ import annotations

import json

import pytest
import torch

from tsm_video.cli import main
from tsm_video.models import build_backbone
from tsm_video.tsm import TimestepContext, inject, merge_interval, save_adapter, tsm_layers, unmerge_all

EPS32 = torch.finfo(torch.float32).eps
pytest.importorskip("peft")  # diffusers' LoRA loading runs on peft


def _tsm_adapter(name: str, path):
    """A seeded tiny backbone with scale-4 experts (rank 2, alpha 3 ≠ rank) on the denoiser and a
    text LoRA (rank 2, alpha 5) on its text encoders, all non-zero, saved to ``path``."""
    torch.manual_seed(0)
    bb = build_backbone(name)
    ctx = TimestepContext(bb.num_timesteps)
    inject(bb.denoiser, bb.denoiser_targets, ctx, [4], rank=2, alpha=3.0)
    for key, enc in bb.text_encoders.items():
        inject(enc, bb.text_targets[key], None, [1], rank=2, alpha=5.0)
    bb.tsm_ctx = ctx
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (bb.denoiser, *bb.text_encoders.values()):
            for _, layer in tsm_layers(module):
                for p in layer.lora_B.values():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    save_adapter(bb, path, {"backbone": name})
    return bb


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Merged ``(W0 + s·BA)x`` vs peft's ``W0x + B'(Ax)`` with ``B' = s·B``: float32 reassociation
    through a few layers, 256 ulps of the magnitude."""
    return bool((a - b).abs().max() <= 256 * EPS32 * float(a.abs().max()))


def _inputs(bb, interval: int, scale: int = 4):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = bb.sample_t(torch.full((2,), interval), scale, g)
    return x, t


@pytest.mark.parametrize("name", ["sd15-tiny", "sd3-tiny"])
def test_exported_interval_loads_in_the_stock_pipeline(tmp_path, name):
    bb = _tsm_adapter(name, tmp_path / "adapter.safetensors")
    assert (
        main(
            [
                "export",
                "lora",
                "--adapter",
                str(tmp_path / "adapter.safetensors"),
                "--out",
                str(tmp_path / "lora"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == [f"s4_i{i}.safetensors" for i in range(4)]
    torch.manual_seed(0)
    stock = build_backbone(name)  # the same base weights, no TSM layers
    stock.pipeline.load_lora_weights(str(tmp_path / "lora" / "s4_i2.safetensors"))
    prompts = ["a red circle left of a blue square", "two green stars"]
    x, t = _inputs(bb, 2)
    with torch.no_grad():
        merge_interval(bb.denoiser, 2)
        cond, cond_stock = bb.encode_text(prompts), stock.encode_text(prompts)
        ref, got = bb.predict(x, t, cond), stock.predict(x, t, cond_stock)
        unmerge_all(bb.denoiser)
    for key in cond if isinstance(cond, dict) else {"": cond}:
        a, b = (cond[key], cond_stock[key]) if key else (cond, cond_stock)
        assert _close(a, b)
    assert _close(ref, got)
    # another interval's expert gives another output: the file holds interval 2, not a mix
    with torch.no_grad():
        merge_interval(bb.denoiser, 0)
        other = bb.predict(x, bb.sample_t(torch.zeros(2, dtype=torch.long), 4, None), cond)
        unmerge_all(bb.denoiser)
    assert not _close(ref, other)


def test_pixart_exports_peft_folders(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    bb = _tsm_adapter("pixart-alpha-tiny", tmp_path / "adapter.safetensors")
    assert (
        main(
            [
                "export",
                "lora",
                "--adapter",
                str(tmp_path / "adapter.safetensors"),
                "--out",
                str(tmp_path / "lora"),
                "--interval",
                "1",
            ]
        )
        == 0
    )
    torch.manual_seed(0)
    stock = build_backbone("pixart-alpha-tiny")
    for component, module in (("transformer", stock.transformer), ("text_encoder", stock.text_encoder)):
        folder = tmp_path / "lora" / "s4_i1" / component
        config = json.loads((folder / "adapter_config.json").read_text())
        inject_adapter_in_model(LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"}), module)
        result = set_peft_model_state_dict(module, load_file(folder / "adapter_model.safetensors"))
        assert not result.unexpected_keys
    x, t = _inputs(bb, 1)
    with torch.no_grad():
        merge_interval(bb.denoiser, 1)
        cond, cond_stock = bb.encode_text(["a red circle"] * 2), stock.encode_text(["a red circle"] * 2)
        ref, got = bb.predict(x, t, cond), stock.predict(x, t, cond_stock)
        unmerge_all(bb.denoiser)
    assert _close(cond["prompt_embeds"], cond_stock["prompt_embeds"]) and _close(ref, got)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["export", "lora", "--adapter", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)]) == 2
    )
    assert "adapter file not found" in capsys.readouterr().err
