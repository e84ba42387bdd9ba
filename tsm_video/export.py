"""Export conversions behind ``tsm-video export`` (the command itself is in :mod:`tsm_video.cli.export`).

- ``vc2-safetensors``: an official VideoCrafter2 ``model.ckpt`` → one safetensors file with the
  same (full) keys, checked strictly against the architecture first. Loading it afterwards needs
  no ``torch.load`` at all.
"""

from __future__ import annotations

import os

__all__ = ["export_vc2_safetensors"]


def export_vc2_safetensors(ckpt: str | os.PathLike, out: str | os.PathLike, backbone: str = "vc2") -> int:
    """Convert ``ckpt`` to safetensors at ``out`` (atomic write); returns the number of tensors.

    The checkpoint must match backbone ``backbone`` exactly (missing, unexpected or mis-shaped
    keys raise ``CheckpointError``); absent schedule buffers are written from the schedule so
    the output always holds the full official key set (``Backbone.convert_checkpoint``).
    """
    from tsm_video.models import CheckpointError, FullCheckpoint, build_backbone

    model = build_backbone(backbone, device="meta")  # architecture only: no memory, no init
    if not isinstance(model, FullCheckpoint):
        raise CheckpointError(f"backbone {backbone} has no single-file checkpoint to convert to")
    return model.convert_checkpoint(ckpt, out)
