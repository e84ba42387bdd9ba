"""Backbones by name: configs pick one of these; nothing is imported from a string.

Each backbone family registers its :class:`~tsm_video.models.backbone.BackboneSpec` entries
here (this module is the one place outside a family's package that imports it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tsm_video.errors import TSMVideoError
from tsm_video.models.backbone import Backbone, BackboneSpec
from tsm_video.models.image.backbones import IMAGE_BACKBONES
from tsm_video.models.vc2.backbones import VC2_BACKBONES

__all__ = [
    "BACKBONES",
    "MissingWeightsError",
    "UnknownBackboneError",
    "build_backbone",
    "check_weights",
    "weights_hint",
]

#: name → registry entry (builder + metadata).
BACKBONES: dict[str, BackboneSpec] = {**VC2_BACKBONES, **IMAGE_BACKBONES}


class UnknownBackboneError(TSMVideoError, ValueError):
    """A backbone name that is not in :data:`BACKBONES`."""


class MissingWeightsError(TSMVideoError, FileNotFoundError):
    """A checkpoint path that does not exist; the message says where the release is published."""


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def weights_hint(name: str) -> str:
    """Where the weights of backbone ``name`` come from, for "not found" messages."""
    release = _spec(name).release
    if release:
        return f"the official {name} weights are published at {release}"
    return f"{name} has no released weights: train them (`make demo` does) or use model.checkpoint=null"


def check_weights(name: str, checkpoint: str | os.PathLike) -> Path:
    """``checkpoint`` as a path, or :class:`MissingWeightsError` naming where the release is."""
    path = Path(checkpoint)
    if not path.exists():
        raise MissingWeightsError(f"checkpoint not found: {path} ({weights_hint(name)})")
    return path


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
    spec = _spec(name)
    if checkpoint is not None:
        check_weights(name, checkpoint)
    return spec.builder(checkpoint, device, dtype)
