"""Where and how a metric runs: device resolution, the official precision, weights identity.

The official EvalCrafter scripts run on CUDA; some models in float16 (BLIP-2 loaded with
``torch_dtype=float16``; GroundingDINO + SAM + DeAOT under ``torch.cuda.amp.autocast``), the
others in float32. :func:`official_dtype` picks that precision on CUDA and float32 on CPU
or when the user forces ``fp32``. :func:`weights_identity` fingerprints a weights file or
folder (size, mtime and a SHA-1 of the first MiB of every file) so that a cached record is
never reused by a run with other weights; the runner puts it, the device and the dtypes
into every cache key and into the report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from eval_crafter.errors import EvalInputError

if TYPE_CHECKING:  # imported where used: `tsm-video eval` checks its inputs before torch loads
    import torch

__all__ = ["HEAD_BYTES", "resolve_device", "official_dtype", "weights_identity"]

HEAD_BYTES = 1 << 20  # bytes of each file hashed by weights_identity


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as ``torch.device``.

    Raises:
        EvalInputError: an unknown device name, or CUDA asked for where there is none.
    """
    import torch

    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise EvalInputError(f"unknown device {name!r} ({err}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalInputError(
            f"device {name!r} asked for, but CUDA is not available here; use --device auto or cpu"
        )
    return device


def official_dtype(device: torch.device, official: torch.dtype, fp32: bool = False) -> torch.dtype:
    """The official run's dtype ``official`` on CUDA; float32 on CPU or when ``fp32`` is forced."""
    import torch

    return official if device.type == "cuda" and not fp32 else torch.float32


def _file_identity(path: Path) -> list:
    stat = path.stat()
    with path.open("rb") as f:
        head = hashlib.sha1(f.read(HEAD_BYTES)).hexdigest()[:16]
    return [stat.st_size, stat.st_mtime_ns, head]


def weights_identity(path: Path | str) -> dict:
    """Fingerprint of a weights file or folder: ``{"size": bytes, "digest": hex}``.

    The digest covers, for every file (a folder: every file under it except ``.git``, sorted
    by relative path), its relative name, size, mtime and a SHA-1 of its first
    :data:`HEAD_BYTES` bytes. Any rewrite, touch or swap of a file changes it.
    """
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.relative_to(path).parts)
    )
    digest, total = hashlib.sha1(), 0
    for file in files:
        ident = _file_identity(file)
        total += ident[0]
        rel = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(repr((rel, *ident)).encode())
    return {"size": total, "files": len(files), "digest": digest.hexdigest()[:16]}
