"""Backbones by name: configs pick one of these; nothing is imported from a string.

Each backbone family registers its :class:`~tsm_video.models.backbone.BackboneSpec` entries
here (this module is the one place outside a family's package that imports it).
"""

from __future__ import annotations

import os

import torch

from tsm_video.models.backbone import Backbone, BackboneSpec
from tsm_video.models.image.backbones import IMAGE_BACKBONES
from tsm_video.models.vc2.backbones import VC2_BACKBONES

__all__ = ["BACKBONES", "build_backbone"]

#: name → registry entry (builder + metadata).
BACKBONES: dict[str, BackboneSpec] = {**VC2_BACKBONES, **IMAGE_BACKBONES}


def build_backbone(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Backbone:
    """Build backbone ``name``, optionally loading ``checkpoint`` strictly.

    Without a checkpoint the weights are randomly initialised (seed with ``torch.manual_seed``).
    ``device="meta"`` builds shapes only (dry runs; with a checkpoint: its keys and shapes are
    checked, no tensor data is read).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name].builder(checkpoint, device, dtype)
