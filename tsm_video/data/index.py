"""Video index: OpenVid-1M CSVs (or any CSV/JSONL with a path and a caption column) → records.

OpenVid's columns carry spaces: ``video, caption, aesthetic score, motion score, temporal
consistency score, camera motion, frame, fps, seconds``. Videos live in a folder or in the
official zip parts (see :mod:`tsm_video.data.zipstore`). Bad rows (malformed, empty path or
caption, unparsable numbers) are skipped and counted by reason in ``VideoIndex.skipped``. A
video absent from the archives stays a record (loading it fails, like a missing file in a
folder), so one CSV gives the same records — and the same clips — in folder and zip mode;
``VideoIndex.absent`` counts them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tsm_video.data.zipstore import ZipStore, group_zip_parts
from tsm_video.errors import TSMVideoError

if TYPE_CHECKING:  # a type only: the index never decodes, so it does not import the decoders
    from tsm_video.data.video_io import Source

__all__ = [
    "VideoRecord",
    "VideoIndex",
    "read_index",
    "iter_rows",
    "csv_header",
    "IndexFileError",
    "MissingIndexError",
    "OPENVID_COLUMNS",
]

ENCODING = "utf-8-sig"
"""UTF-8; a leading byte-order mark (Excel's "CSV UTF-8") is dropped, not read into the first
column's name."""


class IndexFileError(TSMVideoError, KeyError):
    """An index file without the columns it needs (or without a header line)."""

    def __str__(self) -> str:  # KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""


class MissingIndexError(TSMVideoError, FileNotFoundError):
    """The index file does not exist."""


log = logging.getLogger(__name__)

OPENVID_COLUMNS = [
    "video",
    "caption",
    "aesthetic score",
    "motion score",
    "temporal consistency score",
    "camera motion",
    "frame",
    "fps",
    "seconds",
]


@dataclass(frozen=True)
class VideoRecord:
    """One video of the index. ``path`` is a file path, or a member name when ``store`` is set.

    ``fps``/``num_frames`` are the CSV's claims (None when absent); decoding never trusts them.
    """

    id: str
    caption: str
    path: str
    fps: float | None = None
    num_frames: int | None = None
    meta: dict = field(default_factory=dict, compare=False)
    store: ZipStore | None = field(default=None, repr=False, compare=False)

    def load(self) -> Source:
        """What the decoders read: the file path, or the zip member's bytes."""
        return self.path if self.store is None else self.store.read(self.path)


class VideoIndex(Sequence):
    """The records of one index plus the count of skipped rows by reason."""

    def __init__(self, records: list[VideoRecord], skipped: Counter, absent: int = 0) -> None:
        self.records = records
        self.skipped = skipped
        self.absent = absent  # records whose video is not in the zip parts

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]


def iter_rows(path: str | os.PathLike) -> Iterator[dict | None]:
    """Rows of a CSV (header line) or JSONL file as dicts; None for a malformed row."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding=ENCODING) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    yield None
                    continue
                yield row if isinstance(row, dict) else None
        return
    with path.open(newline="", encoding=ENCODING) as f:
        reader = csv.DictReader(f)
        for row in reader:
            # a row with too many fields puts the rest under the None key; too few gives None values
            yield None if None in row or None in row.values() else row


def csv_header(path: str | os.PathLike) -> list[str]:
    """The column names of a CSV file (first line; a UTF-8 BOM is not part of the first name)."""
    path = Path(path)
    if not path.is_file():
        raise MissingIndexError(f"index file {path} does not exist")
    with path.open(newline="", encoding=ENCODING) as f:
        header = next(csv.reader(f), None)
    if not header:
        raise IndexFileError(f"{path} is empty: expected a header line with the column names")
    return header


def _check_columns(path: Path, columns: Sequence[str], found: Sequence[str]) -> None:
    missing = [c for c in columns if c not in found]
    if missing:
        raise IndexFileError(
            f"{path} has no column {' or '.join(map(repr, missing))}; columns: {sorted(found)} "
            f"(pick others with --path-column / --caption-column)"
        )


def _number(value, kind):
    if value is None or value == "":
        return None
    number = kind(float(value))
    if number <= 0:
        raise ValueError(f"non-positive {number}")
    return number


def _resolve_videos(videos, csv_path: Path, zip_cache_dir) -> ZipStore | Path:
    if videos is None:
        return csv_path.parent
    items = [videos] if isinstance(videos, str | os.PathLike) else list(videos)
    paths = [Path(v) for v in items]
    if len(paths) == 1 and paths[0].is_dir():
        try:
            group_zip_parts(paths)
        except FileNotFoundError:
            return paths[0]  # a folder of extracted videos
    return ZipStore(paths, cache_dir=zip_cache_dir)


def read_index(
    csv_path: str | os.PathLike,
    videos: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    path_column: str = "video",
    caption_column: str = "caption",
    zip_cache_dir: str | os.PathLike | None = None,
) -> VideoIndex:
    """Read a CSV/JSONL index.

    ``videos``: a folder of videos; zip parts (files, or a folder holding ``*.zip`` /
    ``*_partaa`` files); or None for paths relative to the CSV's folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise MissingIndexError(f"index file {csv_path} does not exist")
    if csv_path.suffix not in (".jsonl", ".json"):  # a CSV names its columns once, up front
        _check_columns(csv_path, (path_column, caption_column), csv_header(csv_path))
    location = _resolve_videos(videos, csv_path, zip_cache_dir)
    store = location if isinstance(location, ZipStore) else None
    records: list[VideoRecord] = []
    skipped: Counter = Counter()
    absent = 0
    for row in iter_rows(csv_path):
        if row is None:
            skipped["malformed_row"] += 1
            continue
        _check_columns(csv_path, (path_column, caption_column), list(row))
        video, caption = str(row[path_column] or "").strip(), str(row[caption_column] or "").strip()
        if not video or not caption:
            skipped["empty_path_or_caption"] += 1
            continue
        try:
            fps = _number(row.get("fps"), float)
            frames = _number(row.get("frame", row.get("num_frames")), int)
        except ValueError:
            skipped["bad_number"] += 1
            continue
        absent += store is not None and video not in store
        path = video if store is not None else str(location / video)
        meta = {k: v for k, v in row.items() if k not in (path_column, caption_column)}
        records.append(VideoRecord(video, caption, path, fps, frames, meta, store))
    if skipped:
        log.warning("%s: skipped %d rows %s", csv_path, sum(skipped.values()), dict(skipped))
    if absent:
        log.warning("%s: %d videos are not in the zip parts (skipped when loaded)", csv_path, absent)
    return VideoIndex(records, skipped, absent)
