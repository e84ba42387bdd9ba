"""Checkpoint files, whatever the backbone: read tensors (safetensors, or torch files with
``weights_only``), read shapes without data, write safetensors atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tsm_video.models.backbone import CheckpointError

__all__ = ["read_state_dict", "read_shapes", "save_safetensors"]

_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


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
