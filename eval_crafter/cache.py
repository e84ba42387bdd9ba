"""Per-video record cache, so an interrupted evaluation resumes where it stopped.

Layout: ``<cache_dir>/<metric>/<video id>.json`` (the record, plus a ``_source``
fingerprint: the video's size and mtime, a digest of its metadata entry and a digest of
the metric's runtime -- device, dtypes and weights identity) and
``<video id>.<key>.npy`` for every numpy array in the record. NaN is kept as Python's
json ``NaN`` token, so records round-trip exactly (reports use :func:`to_jsonable`
instead). Writes are atomic (temp file + rename): a killed run leaves only whole records.
A record whose video, prompt entry, device, precision or weights changed since it was
written is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tsm_video.fileio import atomic_path, atomic_write_text

__all__ = ["RecordCache", "to_jsonable", "from_jsonable"]

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def to_jsonable(value):
    """Floats that JSON cannot hold (NaN, inf) become ``"NaN"`` / ``"Infinity"`` strings, the
    convention of the EvalCrafter reference data; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_jsonable(value):
    """Inverse of :func:`to_jsonable`: ``"NaN"`` / ``"Infinity"`` strings back to floats."""
    if isinstance(value, dict):
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    return value


def _numpy_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"record value of type {type(value).__name__} is not JSON-able")


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class RecordCache:
    """Records of one metric (one mode/backend) keyed by video id.

    ``runtime``: the metric's device, dtypes and weights identity (``Metric.runtime``); a
    record written under another runtime is not reused.
    """

    def __init__(self, root: Path, runtime: dict | None = None) -> None:
        self.root = Path(root)
        self.runtime_digest = _digest(runtime or {})

    def _fingerprint(self, video_path: Path, meta: dict) -> list:
        """Video size and mtime, digests of the metadata entry and of the runtime."""
        stat = video_path.stat()
        return [stat.st_size, stat.st_mtime_ns, _digest(meta), self.runtime_digest]

    def _json(self, video_id: str) -> Path:
        return self.root / f"{video_id}.json"

    def load(self, video_id: str, video_path: Path, meta: dict) -> dict | None:
        """The cached record, or None if absent or written for another file or prompt entry."""
        path = self._json(video_id)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("_source", None) != self._fingerprint(video_path, meta):
            return None
        for key, name in data.pop("_arrays", {}).items():
            data[key] = np.load(self.root / name, allow_pickle=False)
        return data

    def save(self, video_id: str, video_path: Path, meta: dict, record: dict) -> None:
        """Store ``record``; numpy arrays go to .npy files, written before the JSON."""
        self.root.mkdir(parents=True, exist_ok=True)
        plain, arrays = {}, {}
        for key, value in record.items():
            if isinstance(value, np.ndarray):
                name = f"{video_id}.{key}.npy"
                with atomic_path(self.root / name) as tmp, tmp.open("wb") as f:
                    np.save(f, value, allow_pickle=False)
                arrays[key] = name
            else:
                plain[key] = value
        plain.update(_source=self._fingerprint(video_path, meta), _arrays=arrays)
        atomic_write_text(self._json(video_id), json.dumps(plain, default=_numpy_scalar))  # NaN round-trips
