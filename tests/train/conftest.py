"""Shared fixtures: a small synthetic OpenVid-format dataset and tiny run configs."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from data_tools.synth import make_synthetic_dataset
from tsm_video.config import RunConfig, parse_config


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """12 synthetic 32x32 clips of 8 frames; returns the CSV (videos/ beside it)."""
    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(root, num_videos=12, seed=0, size=(32, 32), num_frames=8, fps=8.0)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A vc2-tiny base checkpoint (official keys) whose zero-initialised branches (every proj_out,
    out_layers.3, ...) are pushed off zero, so attention LoRA experts get real gradients."""
    from safetensors.torch import save_file

    from tsm_video.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("vc2-tiny")
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("base") / "tiny_base.safetensors"
    save_file({k: v.contiguous() for k, v in model.checkpoint_state_dict().items()}, str(path))
    return path


def _tiny_config(csv: Path, out: Path, *overrides: str, base: Path | None = None) -> RunConfig:
    """vc2-tiny on 4x32x32 clips, scales [2, 1], rank 2, text LoRA on, 2 clips per device, joint stage 1."""
    raw = {
        "run": {"name": "tiny", "output_dir": str(out), "seed": 0},
        "model": {
            "backbone": "vc2-tiny",
            "mixed_precision": "no",
            "gradient_checkpointing": True,
            "checkpoint": None if base is None else str(base),
        },
        "tsm": {"scales": [2, 1], "rank": 2, "text_lora": {"enabled": True, "rank": 2}},
        "data": {
            "csv": str(csv),
            "videos": str(csv.parent / "videos"),
            "num_frames": 4,
            "height": 32,
            "width": 32,
            "num_workers": 0,
            "caption_dropout": 0.5,
        },
        "train": {
            "stages": ["foster", "assemble"],
            "steps": {"base": 1, "foster": 2, "assemble": 1},
            "foster_schedule": "joint",  # one run per scale; tests/train/test_schedules.py covers per_expert
            "global_batch_size": 4,
            "per_device_batch_size": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "keep_last": 2,
            "validation": {"every": 0},
        },
        "generate": {"fps": 8},
    }
    return parse_config(raw, overrides)


@pytest.fixture(scope="session")
def tiny_config(tiny_base):
    """``tiny_config(csv, out_dir, *overrides)`` → a validated tiny :class:`RunConfig` on ``tiny_base``."""
    return functools.partial(_tiny_config, base=tiny_base)
