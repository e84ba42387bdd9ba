"""Generation with a tiny VC2-architecture model: determinism, and experts that follow t.

Tolerances: a clip sampled alone vs inside a batch differs only by float summation order
(CPU kernels block differently per batch size): atol 1e-4 on pixels in [-1, 1]. Clips are 32×32
(4×4 latents): at 2×2 latents the UNet's deepest level is 1×1, where GroupNorm over two values
amplifies that rounding to ~1e-2. Merged
(W0 + BA per interval) vs un-merged (per-sample experts in the forward) generation differs by
the rounding of the merged weights: atol 2e-3 on pixels after 2 DDIM steps with CFG 3.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tsm_video.cli import main as cli_main
from tsm_video.data.video_io import read_frames
from tsm_video.diffusion import ddim_timesteps
from tsm_video.generation import pipeline
from tsm_video.generation.experts import AdapterSpecError, attach_adapter, inspect_adapter
from tsm_video.generation.sampling import generate_clips
from tsm_video.generation.settings import GenerateSettings
from tsm_video.models.vc2.configs import VC2_TINY_ARCH
from tsm_video.models.vc2.model import VC2Model
from tsm_video.tsm import TimestepContext, inject, save_adapter, tsm_layers

SETTINGS = GenerateSettings(height=32, width=32, num_frames=2, steps=2, eta=1.0, guidance_scale=3.0, fps=8)
# DDIM timesteps 501, 1: interval 1 then 0 at scale 2; 2 then 0 at scale 4 (the stage-2 core).
PROMPTS = ["a red square moving right", "a blue circle"]


def _perturb(module: torch.nn.Module, seed: int, std: float) -> None:
    """Push every parameter off its init (zero-init outputs, B = 0, router = 0) reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.fixture(scope="module")
def tiny() -> VC2Model:
    torch.manual_seed(0)
    model = VC2Model.from_config(VC2_TINY_ARCH).eval()
    _perturb(model, 1, 0.02)
    return model.requires_grad_(False)


def _make_adapter(tiny, path, scales, mode, text_lora=False, backbone="vc2-tiny"):
    """Save an adapter trained nowhere: random experts (and router) of the given layout."""
    model = copy.deepcopy(tiny)
    ctx = TimestepContext(1000)
    inject(model.unet, "vc2", ctx=ctx, scales=scales, rank=2, alpha=2.0, mode=mode)
    if text_lora:
        inject(model.text_encoder, "vc2-text", ctx=None, scales=[1], rank=2, alpha=2.0, mode="foster")
    for seed, (_, layer) in enumerate(tsm_layers(model)):
        _perturb(layer.lora_A, seed, 0.3)
        _perturb(layer.lora_B, seed + 1000, 0.3)
        if layer.router is not None:
            _perturb(layer.router, seed + 2000, 0.5)
    save_adapter(model, path, {"backbone": backbone, "targets": "vc2"})
    return path


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lora": _make_adapter(tiny, root / "lora.safetensors", [1], "foster"),
        "foster2": _make_adapter(tiny, root / "foster2.safetensors", [2], "foster"),
        "assemble": _make_adapter(tiny, root / "assemble.safetensors", [4, 2, 1], "assemble", text_lora=True),
    }


@pytest.fixture(scope="module")
def base_clip(tiny):
    return generate_clips(tiny, PROMPTS[:1], [5], SETTINGS)


def _attached(tiny, path):
    model = copy.deepcopy(tiny)
    spec = inspect_adapter(path, "vc2-tiny", 1000)
    return model, attach_adapter(model, spec), spec


def test_same_prompt_and_seed_same_clip_whatever_the_batch(tiny):
    pair = generate_clips(tiny, PROMPTS, [11, 22], SETTINGS)
    alone = generate_clips(tiny, PROMPTS[1:], [22], SETTINGS)
    again = generate_clips(tiny, PROMPTS[1:], [22], SETTINGS)
    assert pair.shape == (2, 3, 2, 32, 32)
    assert torch.equal(alone, again)  # same call, bit for bit
    torch.testing.assert_close(pair[1:], alone, rtol=0, atol=1e-4)
    other_seed = generate_clips(tiny, PROMPTS[1:], [23], SETTINGS)
    assert (other_seed - alone).abs().max() > 0.05  # the seed matters


def _expected_switches(steps, n):
    """(step_index, interval) where the interval of the descending DDIM timesteps changes."""
    out, last = [], None
    for j, t in enumerate(ddim_timesteps(steps).flip(0).tolist()):
        if t * n // 1000 != last:
            last = t * n // 1000
            out.append((j, last))
    return out


@pytest.mark.parametrize("steps", [4, 25, 50])
def test_switcher_merges_exactly_at_interval_boundaries(tiny, adapters, steps):
    model, switcher, _ = _attached(tiny, adapters["foster2"])
    layer = tsm_layers(model)[0][1]
    w0 = layer.base.weight.clone()
    for j, t in enumerate(ddim_timesteps(steps).flip(0).tolist()):
        switcher(j, t)
        assert layer.merged_interval == t * 2 // 1000
    assert [(j, i) for j, _, _, i in switcher.merges] == _expected_switches(steps, 2)
    assert len(switcher.merges) == 2  # one merge per distinct interval visited
    switcher.close()
    assert layer.merged_interval is None
    torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=1e-6)


def test_stage2_switches_core_scale_only(tiny, adapters):
    model, switcher, spec = _attached(tiny, adapters["assemble"])
    assert spec.stage == "assemble" and spec.scales == (4, 2, 1)
    for j, t in enumerate(ddim_timesteps(50).flip(0).tolist()):
        switcher(j, t)
    assert {n for _, _, n, _ in switcher.merges} == {4}
    assert [(j, i) for j, _, _, i in switcher.merges] == _expected_switches(50, 4)
    text = [layer for name, layer in tsm_layers(model) if name.startswith("text_encoder.")]
    assert text and all(layer.merged_interval is None for layer in text)  # text LoRA runs un-merged
    switcher.close()


@pytest.mark.parametrize("kind", ["lora", "foster2", "assemble"])
def test_merged_generation_equals_per_sample_experts(tiny, adapters, base_clip, kind):
    model, switcher, _ = _attached(tiny, adapters[kind])
    merged = generate_clips(model, PROMPTS[:1], [5], SETTINGS, switcher)
    expected = {"lora": [0], "foster2": [1, 0], "assemble": [2, 0]}[kind]
    assert [i for _, _, _, i in switcher.merges] == expected
    assert all(layer.merged_interval is None for _, layer in tsm_layers(model))  # W0 restored
    unmerged = generate_clips(model, PROMPTS[:1], [5], SETTINGS)  # experts per sample in the forward
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=2e-3)
    assert (merged - base_clip).abs().max() > 0.05  # the adapter changes the clip


def test_kept_experts_give_the_clips_of_recomputed_ones(tiny, adapters):
    """Across batches (the CLI's ``keep_merged``) a switcher that keeps every reached interval's
    merged weights switches back by copies: bit for bit the clips of one that recomputes them."""
    clips = {}
    for keep in (True, False):
        model = copy.deepcopy(tiny)
        switcher = attach_adapter(model, inspect_adapter(adapters["assemble"], "vc2-tiny", 1000), keep)
        clips[keep] = [
            generate_clips(model, PROMPTS[:1], [seed], SETTINGS, switcher, keep_merged=True)
            for seed in (5, 6)
        ]
        assert sorted(switcher.plans[4]._kept) == ([0, 2] if keep else [])
        assert [i for _, _, _, i in switcher.merges] == [2, 0, 2, 0]
        switcher.close()
    assert all(torch.equal(a, b) for a, b in zip(clips[True], clips[False]))


def test_adapter_errors_name_the_problem(tiny, adapters, tmp_path):
    with pytest.raises(AdapterSpecError, match="not found"):
        inspect_adapter(tmp_path / "missing.safetensors", "vc2-tiny", 1000)
    with pytest.raises(AdapterSpecError, match="backbone 'vc2-tiny'.*model.backbone is 'vc2'"):
        inspect_adapter(adapters["lora"], "vc2", 1000)
    with pytest.raises(AdapterSpecError, match="T=1000"):
        inspect_adapter(adapters["lora"], "vc2-tiny", 500)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterSpecError, match="not a readable"):
        inspect_adapter(junk, "vc2-tiny", 1000)


# --- the `tsm-video generate` command -----------------------------------------------------

EVALCRAFTER = Path(__file__).parent / "fixtures" / "evalcrafter" / "metadata.json"


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny, tmp_path_factory):
    """The perturbed tiny model as a checkpoint (official keys), so its ε is not identically 0."""
    path = tmp_path_factory.mktemp("base") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.checkpoint_state_dict().items()}, str(path))
    return path


@pytest.fixture
def cfg_path(tmp_path, tiny_checkpoint):
    """A vc2-tiny run config with tiny generation defaults."""
    cfg = {
        "model": {"backbone": "vc2-tiny", "checkpoint": str(tiny_checkpoint), "mixed_precision": "no"},
        "generate": {
            "height": 32,
            "width": 32,
            "num_frames": 2,
            "steps": 1,
            "eta": 1.0,
            "guidance_scale": 3.0,
            "fps": 8,
            "seed": 7,
            "batch_size": 2,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def metadata_3(tmp_path):
    """The first three EvalCrafter prompts, in the official metadata format."""
    meta = json.loads(EVALCRAFTER.read_text())
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({k: meta[k] for k in ("0000", "0001", "0002")}))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "load_backbone", refuse)


def _generate(*args) -> int:
    return cli_main(["generate", "--no-progress", *map(str, args)])


def test_evalcrafter_shards_cover_all_ids_and_resume(cfg_path, metadata_3, tmp_path, monkeypatch, capsys):
    out = tmp_path / "clips"
    assert _generate("--cfg", cfg_path, "--prompts", metadata_3, "--out", out, "--shard", "1/2") == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0001.mp4"]
    (out / ".0002.mp4.tmp").write_bytes(b"killed mid-write")  # never counts as a clip
    assert _generate("--cfg", cfg_path, "--prompts", metadata_3, "--out", out, "--shard", "0/2") == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0000.mp4", "0001.mp4", "0002.mp4"]
    frames, fps = read_frames(out / "0002.mp4")
    assert frames.shape == (2, 32, 32, 3) and fps == 10  # VC2's file frame rate
    # Batch of two (0000 + 0002 in shard 0) vs alone: the same clip.
    alone = tmp_path / "alone"
    assert _generate("--cfg", cfg_path, "--prompts", metadata_3, "--out", alone, "--shard", "2/3") == 0
    assert np.abs(read_frames(alone / "0002.mp4")[0].astype(int) - frames).max() <= 1
    capsys.readouterr()
    monkeypatch.setattr(pipeline, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    assert _generate("--cfg", cfg_path, "--prompts", metadata_3, "--out", out) == 0
    assert "0 clips written, 3 already present" in capsys.readouterr().out
    # Another seed in the same folder would mix two runs' clips.
    assert _generate("--cfg", cfg_path, "--prompts", metadata_3, "--out", out, "--seed", "8") == 2
    assert "other settings" in capsys.readouterr().err


def test_compare_writes_labelled_grid(cfg_path, tmp_path, tiny, adapters, monkeypatch):
    out = tmp_path / "compare"
    kept, attach = [], pipeline.attach_adapter

    def spy(model, spec, keep=True):
        kept.append(keep)
        return attach(model, spec, keep)

    monkeypatch.setattr(pipeline, "attach_adapter", spy)
    rc = _generate(
        "--cfg",
        cfg_path,
        "--prompt",
        "a red square",
        "--out",
        out,
        "--grid-png",
        "--no-keep-experts",
        "--compare",
        f"base,tsm={adapters['assemble']}",
    )
    assert rc == 0
    assert kept[-1] is False  # the flag reaches the sampling switcher
    grid, _ = read_frames(out / "a_red_square.mp4")
    strip = grid.shape[1] - 32
    assert grid.shape == (2, 32 + strip, 64, 3) and strip >= 12
    png = np.asarray(Image.open(out / "a_red_square.png"))  # lossless: frames side by side
    clips = [np.load(out / label / "a_red_square.npy") for label in ("base", "tsm")]
    for k, clip in enumerate(clips):
        assert (out / ("base", "tsm")[k] / "a_red_square.mp4").is_file()
        np.testing.assert_array_equal(png[strip:, 32 * k : 32 * (k + 1)], clip[0])  # first frame
    assert not np.array_equal(*clips)  # same seed, different models


@pytest.fixture(scope="module")
def bad_files(tiny, adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.txt").write_text("\n\n")
    tensors = load_file(adapters["lora"])
    name = next(iter(tensors))
    tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)
    with safe_open(str(adapters["lora"]), framework="pt") as f:
        save_file(tensors, str(root / "reshaped.safetensors"), metadata=f.metadata())
    return {
        "EMPTY": root / "empty.txt",
        "MISSING": root / "missing",
        "VC2": _make_adapter(tiny, root / "vc2.safetensors", [1], "foster", backbone="vc2"),
        "RESHAPED": root / "reshaped.safetensors",
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prompts", "EMPTY"], "no prompts"),
        (["--prompts", "MISSING"], "prompt file not found"),
        (["--prompt", "a cat", "--adapter", "MISSING"], "adapter file not found"),
        (["--prompt", "a cat", "--adapter", "VC2"], "backbone 'vc2'"),
        (["--prompt", "a cat", "--adapter", "RESHAPED"], "shape"),
        (["--prompt", "a cat", "--height", "40"], "--height 40: must be a positive multiple of 16"),
        (["--prompt", "a cat", "--frames", "0"], "--frames 0"),
        (["--prompt", "a cat", "--shard", "3/3"], "--shard 3/3"),
        (["--prompt", "a cat", "--compare", "base,lora"], "LABEL=ADAPTER_FILE"),
        (["--prompt", "a cat", "--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_bad_input_fails_before_model_load(cfg_path, tmp_path, bad_files, no_model, capsys, flags, message):
    flags = [str(bad_files.get(f, f)) for f in flags]
    assert _generate("--cfg", cfg_path, "--out", tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
