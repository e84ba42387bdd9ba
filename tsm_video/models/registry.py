"""Backbones by name: configs pick one of these; nothing is imported from a string."""

from __future__ import annotations

import os
from typing import Any

import torch

from tsm_video.errors import TSMVideoError
from tsm_video.models.vc2.checkpoint import read_state_dict
from tsm_video.models.vc2.configs import VC2_ARCH, VC2_TINY_ARCH
from tsm_video.models.vc2.model import VC2Model

__all__ = ["BACKBONES", "UnknownBackboneError", "build_backbone"]

#: name → arch dict of a :class:`VC2Model` (``vc2``: the real 512 model; ``vc2-tiny``: demo/tests).
BACKBONES: dict[str, dict[str, Any]] = {"vc2": VC2_ARCH, "vc2-tiny": VC2_TINY_ARCH}


class UnknownBackboneError(TSMVideoError, ValueError):
    """A backbone name that is not in :data:`BACKBONES`."""


def build_backbone(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> VC2Model:
    """Build backbone ``name``, optionally loading ``checkpoint`` strictly.

    Without a checkpoint the weights are randomly initialised (seed with ``torch.manual_seed``).
    With one, the model is built on ``meta`` (no random init) and takes the checkpoint's tensors,
    then moves to ``device``/``dtype``. ``device="meta"`` only checks the checkpoint's keys and
    shapes (a free dry run, also for the real 1.85 B-parameter config).
    """
    if name not in BACKBONES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    arch = BACKBONES[name]
    if checkpoint is None or torch.device(device or "cpu").type == "meta":
        model = VC2Model.from_config(arch, device=device, dtype=dtype)
        if checkpoint is not None:
            model.load_checkpoint(checkpoint)  # meta: keys and shapes only
        return model
    model = VC2Model.from_config(arch, device="meta")
    model.load_checkpoint_state(read_state_dict(checkpoint), str(checkpoint), assign=True)
    return model.to(device=device or "cpu", dtype=dtype)
