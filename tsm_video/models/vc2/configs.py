"""Architecture dicts of the VC2 family: the real 512 model and a tiny one for demos and tests.

An ``arch`` dict has exactly these sections (JSON-able, validated by :func:`resolve_arch`):

- ``unet``: LVDM ``unet_config.params`` (see :mod:`tsm_video.models.vc2.unet_config`);
- ``text``: :class:`~tsm_video.models.vc2.text_encoder.VC2TextEncoder` arguments;
- ``vae``: :class:`~tsm_video.models.vc2.vae.VC2VAE` arguments (flattened ``ddconfig`` + ``embed_dim``);
- ``scale_factor``: latent scale (0.18215);
- ``schedule``: :class:`~tsm_video.diffusion.VC2Schedule` arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS

__all__ = ["VC2_ARCH", "VC2_TINY_ARCH", "VC2_TEXT", "VC2_SCHEDULE", "resolve_arch"]

#: OpenCLIP ViT-H-14 text tower read at the penultimate layer.
VC2_TEXT: dict[str, Any] = {
    "width": 1024,
    "heads": 16,
    "layers": 24,
    "context_length": 77,
    "vocab_size": 49408,
    "embed_dim": 1024,
    "layer": "penultimate",
}

#: ``LatentDiffusion`` schedule arguments of ``configs/inference_t2v_512_v2.0.yaml``.
VC2_SCHEDULE: dict[str, Any] = {
    "num_timesteps": 1000,
    "linear_start": 0.00085,
    "linear_end": 0.012,
    "use_scale": True,
    "scale_a": 1.0,
    "scale_b": 0.7,
    "mid_step": 400,
    "fix_scale_bug": False,
}

#: The real VideoCrafter2 (``configs/inference_t2v_512_v2.0.yaml``): 1.85 B parameters.
VC2_ARCH: dict[str, Any] = {
    "unet": VC2_UNET_PARAMS,
    "text": VC2_TEXT,
    "vae": {
        "embed_dim": 4,
        "double_z": True,
        "z_channels": 4,
        "resolution": 512,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
    "scale_factor": 0.18215,
    "schedule": VC2_SCHEDULE,
}

#: The same architecture at toy widths (random weights): demo runs and tests on a CPU.
#: The VAE keeps the ×8 spatial factor; latents need H, W divisible by 2 (two UNet levels).
VC2_TINY_ARCH: dict[str, Any] = {
    "unet": {
        **VC2_UNET_PARAMS,
        "model_channels": 32,
        "channel_mult": [1, 2],
        "attention_resolutions": [2, 1],
        "num_res_blocks": 1,
        "num_head_channels": 16,
        "context_dim": 64,
        "use_checkpoint": False,
    },
    "text": {**VC2_TEXT, "width": 64, "heads": 4, "layers": 3, "embed_dim": 64},
    "vae": {**VC2_ARCH["vae"], "resolution": 64, "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1},
    "scale_factor": 0.18215,
    "schedule": VC2_SCHEDULE,
}

_SECTIONS = ("unet", "text", "vae", "scale_factor", "schedule")


def resolve_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``arch`` with every section present; unknown or missing sections raise."""
    if not isinstance(arch, Mapping):
        raise ValueError(f"arch must be a mapping, got {type(arch).__name__}")
    unknown = sorted(set(arch) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown arch section(s) {unknown}; valid: {list(_SECTIONS)}")
    resolved = {"schedule": VC2_SCHEDULE, "scale_factor": 0.18215, **copy.deepcopy(dict(arch))}
    missing = [s for s in ("unet", "text", "vae") if s not in resolved]
    if missing:
        raise ValueError(f"arch is missing section(s) {missing}")
    for section in ("unet", "text", "vae", "schedule"):
        if not isinstance(resolved[section], Mapping):
            raise ValueError(f"arch[{section!r}] must be a mapping, got {type(resolved[section]).__name__}")
    text_width = resolved["text"].get("width", VC2_TEXT["width"])
    if resolved["unet"].get("context_dim") != text_width:
        raise ValueError(f"unet context_dim {resolved['unet'].get('context_dim')} != text width {text_width}")
    embed_dim = resolved["vae"].get("embed_dim", 4)
    if resolved["unet"].get("in_channels") != embed_dim:
        raise ValueError(
            f"unet in_channels {resolved['unet'].get('in_channels')} != vae embed_dim {embed_dim}"
        )
    return copy.deepcopy(resolved)
