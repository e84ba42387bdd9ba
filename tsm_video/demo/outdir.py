"""A command's own output folder: created and marked by the command, cleaned only by it.

A command that rebuilds its outputs on every run (the demo, the post-pretraining study) calls
:func:`claim_output_dir` first. A missing or empty folder is created and marked with a small
JSON file naming the command. A folder that already carries the command's marker is its own
from an earlier run: the entries the marker lists (the ones that command created) are
removed, and nothing else. Any other non-empty folder — a project folder, ``.``, another
tool's output — is refused with :class:`OutputDirError` and left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tsm_video.errors import TSMVideoError
from tsm_video.fileio import atomic_write_text

__all__ = ["MARKER", "OutputDirError", "claim_output_dir", "record_entries"]

MARKER = ".tsm-video-output.json"


class OutputDirError(TSMVideoError, ValueError):
    """The output folder cannot be used: not a folder, or not empty and not this command's
    (``tsm-video`` prints it as one line and exits with 2)."""


def _read_marker(path: Path) -> dict | None:
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(path: Path, data: dict) -> None:
    atomic_write_text(path / MARKER, json.dumps(data, indent=1))


def claim_output_dir(path: str | os.PathLike, command: str, clean: bool = True) -> Path:
    """Make ``path`` ``command``'s output folder and return it: with ``clean``, empty but for the
    marker (the entries an earlier run recorded are removed); without, as it is (a cache).

    Raises :class:`OutputDirError` when ``path`` is a file, or a non-empty folder without
    ``command``'s marker (nothing is deleted then).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output {path} exists and is not a folder")
    marker = _read_marker(path) if path.is_dir() else None
    if path.is_dir() and any(path.iterdir()):
        if marker is None or marker.get("command") != command:
            raise OutputDirError(
                f"output folder {path} is not empty and was not created by `{command}` "
                f"(no {MARKER} marker); choose a new or empty folder — nothing was deleted"
            )
        if not clean:
            return path
        for name in marker.get("entries", []):
            entry = path / name
            if Path(name).name != name or name in ("", ".", "..", MARKER):
                continue  # only plain top-level names the command recorded
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"cannot create output folder {path}: {err.strerror}") from err
    _write_marker(path, {"command": command, "entries": []})
    return path


def record_entries(path: str | os.PathLike, command: str, names: list[str]) -> None:
    """Add top-level ``names`` (created by ``command`` in ``path``) to the marker, before writing
    them, so a later run of ``command`` removes exactly those."""
    path = Path(path)
    marker = _read_marker(path) or {"command": command, "entries": []}
    marker["entries"] = sorted(set(marker.get("entries", [])) | set(names))
    _write_marker(path, marker)
