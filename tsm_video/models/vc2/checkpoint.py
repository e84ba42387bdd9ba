"""Reading, checking and writing VideoCrafter2 checkpoints (official ``model.ckpt`` or safetensors).

A VC2 checkpoint's ``state_dict`` holds ``model.diffusion_model.*`` (UNet),
``cond_stage_model.model.*`` (OpenCLIP text tower), ``first_stage_model.*`` (VAE) and 13
top-level schedule buffers (``betas`` … ``scale_arr``). Our modules use the same names below
those prefixes, so the only mapping is the prefix of each part. File reading and writing is
:mod:`tsm_video.models.checkpoint_io` (re-exported here): ``.ckpt``/``.pt``/``.pth`` load with
``torch.load(weights_only=True)`` (memory-mapped when the file allows); nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tsm_video.models.backbone import CheckpointError
from tsm_video.models.checkpoint_io import read_shapes, read_state_dict, save_safetensors

__all__ = [
    "PART_PREFIXES",
    "CheckpointError",
    "read_state_dict",
    "read_shapes",
    "check_state_dict",
    "split_state_dict",
    "save_safetensors",
]

#: VC2Model attribute → key prefix in the official checkpoint.
PART_PREFIXES = {
    "unet": "model.diffusion_model.",
    "text_encoder": "cond_stage_model.model.",
    "vae": "first_stage_model.",
}
_SHOWN = 8  # keys listed per category in an error


def _listing(kind: str, items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"\n  {kind} ({len(items)}): " + ", ".join(items[:_SHOWN]) + more


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    source: str,
    what: str,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Raise one :class:`CheckpointError` listing missing, unexpected and mis-shaped keys.

    ``optional`` keys (the schedule buffers) may be absent but must have the right shape if present.
    """
    optional = optional or {}
    allowed = {**expected, **optional}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(allowed))
    misshaped = sorted(
        f"{k} (file {list(found[k])} vs model {list(allowed[k])})"
        for k in set(found) & set(allowed)
        if tuple(found[k]) != tuple(allowed[k])
    )
    if missing or unexpected or misshaped:
        message = f"checkpoint {source} does not match {what}:"
        for kind, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                message += _listing(kind, items)
        raise CheckpointError(message)


def split_state_dict(
    state: Mapping[str, torch.Tensor], parts: Mapping[str, nn.Module] | None = None
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Official keys → ``({part: {local key: tensor}}, {top-level key: tensor})``.

    ``parts`` (attribute → module) limits the split to those parts; other keys stay top-level.
    """
    prefixes = {name: PART_PREFIXES[name] for name in (parts or PART_PREFIXES)}
    split: dict[str, dict[str, torch.Tensor]] = {name: {} for name in prefixes}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        part = next((name for name, prefix in prefixes.items() if key.startswith(prefix)), None)
        if part is None:
            rest[key] = value
        else:
            split[part][key[len(prefixes[part]) :]] = value
    return split, rest
