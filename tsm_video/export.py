"""Export conversions behind ``tsm-video export`` (the command itself is in :mod:`tsm_video.cli.export`).

- ``vc2-safetensors``: an official VideoCrafter2 ``model.ckpt`` → one safetensors file with the
  same (full) keys, checked strictly against the architecture first. Loading it afterwards needs
  no ``torch.load`` at all.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_vc2_safetensors"]


def export_vc2_safetensors(ckpt: str | os.PathLike, out: str | os.PathLike, backbone: str = "vc2") -> int:
    """Convert ``ckpt`` to safetensors at ``out`` (atomic write); returns the number of tensors.

    The checkpoint must match backbone ``backbone`` exactly (missing, unexpected or mis-shaped
    keys raise ``CheckpointError``); absent schedule buffers are written from the schedule so
    the output always holds the full official key set.
    """
    from tsm_video.models import build_backbone
    from tsm_video.models.registry import check_weights
    from tsm_video.models.vc2.checkpoint import CheckpointError, read_state_dict, save_safetensors

    ckpt, out = Path(ckpt), Path(out)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"output {out} must end in .safetensors")
    if out.resolve() == ckpt.resolve():
        raise CheckpointError(f"output {out} would overwrite the input checkpoint")
    model = build_backbone(backbone, device="meta")  # architecture only (no memory): a bad name fails first
    state = read_state_dict(check_weights(backbone, ckpt))
    model.validate_checkpoint_state(state, str(ckpt))
    state = {**model.schedule.checkpoint_buffers(), **state}
    save_safetensors(state, out, metadata={"format": "pt", "backbone": backbone, "source": ckpt.name})
    return len(state)
