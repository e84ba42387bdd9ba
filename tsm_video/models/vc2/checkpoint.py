"""Reading, checking and writing VideoCrafter2 checkpoints (official ``model.ckpt`` or safetensors).

A VC2 checkpoint's ``state_dict`` holds ``model.diffusion_model.*`` (UNet),
``cond_stage_model.model.*`` (OpenCLIP text tower), ``first_stage_model.*`` (VAE) and 13
top-level schedule buffers (``betas`` … ``scale_arr``). Our modules use the same names below
those prefixes, so the only mapping is the prefix of each part. ``.ckpt``/``.pt``/``.pth`` load
with ``torch.load(weights_only=True)`` (memory-mapped when the file allows); nothing is unpickled.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tsm_video.models.backbone import CheckpointError

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
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_SHOWN = 8  # keys listed per category in an error


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (or one under 'state_dict')")
    return dict(state)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint on the CPU: safetensors, or a torch file read with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix not in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint type; use .safetensors or one of {_PICKLE_SUFFIXES}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:  # legacy (non-zip) torch files cannot be memory-mapped
        if "mmap" not in str(err):
            raise CheckpointError(f"{path}: cannot read with torch.load(weights_only=True): {err}") from err
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors come in many types
        raise CheckpointError(f"{path}: cannot read with torch.load(weights_only=True): {err}") from err
    return _unwrap(obj, path)


def read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Key → shape without reading tensor data (safetensors header, or a memory-mapped torch file)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


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


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as safetensors atomically (temp file in the same folder, then rename).

    Tensors sharing storage are copied so each key owns its bytes (safetensors forbids aliasing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owned, seen = {}, set()
    for key, value in tensors.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        owned[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(owned, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
