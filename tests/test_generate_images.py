"""``tsm-video generate`` on an image backbone: PNGs + grid, experts following t, resumable."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from PIL import Image

from tsm_video.cli import main
from tsm_video.models import build_backbone
from tsm_video.tsm import TimestepContext, inject, save_adapter, tsm_layers


def _config(tmp_path):
    cfg = {
        "run": {"name": "gen", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"backbone": "sd3-tiny", "checkpoint": None, "mixed_precision": "no"},
        "tsm": {"targets": "sd"},
        "generate": {
            "height": 64,
            "width": 64,
            "num_frames": 1,
            "steps": 4,
            "eta": 0.0,
            "guidance_scale": 4.0,
            "seed": 7,
            "batch_size": 2,
        },
    }
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_generate_writes_pngs_and_grid_with_experts_following_t(tmp_path):
    cfg = _config(tmp_path)
    torch.manual_seed(0)  # the run seed: generate builds the same random-init base
    bb = build_backbone("sd3-tiny")
    inject(bb.denoiser, "sd", TimestepContext(), [4], rank=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in tsm_layers(bb.denoiser):
            layer.lora_B["s4"].copy_(torch.randn(layer.lora_B["s4"].shape, generator=g))
    save_adapter(bb, tmp_path / "adapter.safetensors", {"backbone": "sd3-tiny"})
    prompts = [
        "--prompt",
        "two red circles on the left",
        "--prompt",
        "one blue square on the right",
        "--prompt",
        "three green triangles",
    ]
    assert (
        main(["generate", "--cfg", str(cfg), "--out", str(tmp_path / "base"), "--no-progress", *prompts]) == 0
    )
    assert (
        main(
            [
                "generate",
                "--cfg",
                str(cfg),
                "--out",
                str(tmp_path / "tsm"),
                "--no-progress",
                "--adapter",
                str(tmp_path / "adapter.safetensors"),
                *prompts,
            ]
        )
        == 0
    )
    for run in ("base", "tsm"):
        pngs = sorted(p.name for p in (tmp_path / run).glob("*.png"))
        assert len(pngs) == 4 and "grid.png" in pngs
        grid = np.asarray(Image.open(tmp_path / run / "grid.png"))
        assert grid.shape == (64, 3 * 64, 3)
    name = next(p.name for p in (tmp_path / "base").glob("two*.png"))
    base, tsm = (np.asarray(Image.open(tmp_path / run / name)) for run in ("base", "tsm"))
    assert base.shape == (64, 64, 3) and not np.array_equal(base, tsm)  # the experts changed the image
    # a second run finds every image present and writes nothing
    assert (
        main(["generate", "--cfg", str(cfg), "--out", str(tmp_path / "base"), "--no-progress", *prompts]) == 0
    )
