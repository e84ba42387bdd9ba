"""Checkpoint files, whatever the backbone: read tensors (safetensors, or torch files with
``weights_only``), read shapes without data, write safetensors atomically."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tsm_video.fileio import atomic_path
from tsm_video.models.backbone import CheckpointError

__all__ = ["read_state_dict", "read_shapes", "save_safetensors"]

_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (or one under 'state_dict')")
    return dict(state)


def _refused(path: Path, err: Exception) -> CheckpointError:
    """A pickle that imports code: refused, with how to convert a file the user trusts."""
    found = re.search(r"GLOBAL (\S+)", str(err), re.IGNORECASE)
    code = f"imports `{found.group(1)}`" if found else "holds Python objects other than tensors"
    target = path.with_suffix(".safetensors")
    return CheckpointError(
        f"{path}: refused as unsafe: the pickle {code}, which loading would run; nothing was loaded. "
        f'If you trust its source, convert it once and use the result: python -c "import torch, '
        f"safetensors.torch as st; s = torch.load('{path}', weights_only=False); "
        f"st.save_file(s.get('state_dict', s), '{target}')\""
    )


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped when the file allows; every failure is a
    :class:`CheckpointError` (a file that is no torch file, a truncated one, an unsafe pickle)."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save zip, or a legacy pickle
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (it starts with {head!r}, not a torch.save zip or pickle)"
        )
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) torch files cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if re.search(r"GLOBAL|unsupported global", str(err), re.IGNORECASE):
            raise _refused(path, err) from err
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from err
    except Exception as err:  # noqa: BLE001 - zip/pickle/EOF errors come in many types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from err


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _safetensors_error(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint on the CPU: safetensors, or a torch file read with weights_only.

    Raises :class:`CheckpointError` for a missing, unreadable, truncated or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except SafetensorError as err:
            raise _safetensors_error(path, err) from err
    if path.suffix not in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint type; use .safetensors or one of {_PICKLE_SUFFIXES}"
        )
    return _unwrap(_torch_load(path), path)


def read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Key → shape without reading tensor data (safetensors header, or a memory-mapped torch file)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except SafetensorError as err:
            raise _safetensors_error(path, err) from err
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
    with atomic_path(path) as tmp:
        save_file(owned, tmp, metadata=metadata)
