"""Check a dataset: which videos decode, their fps / length / resolution, and why the rest fail.

Each video is opened from where the index says (folder or zip member); its packets are
demuxed to list the frames really present (with their timestamps), and its first and last
frames are decoded. ``deep`` also decodes every packet (or ``deep_segments`` evenly spaced
keyframe-to-keyframe stretches) so damage anywhere in the file is found: such a file gets
status ``corrupt``. ``check_decord`` records whether decord's random access returns the same
frames as a sequential decode (``decord exact``: yes/no), the proof
:class:`~tsm_video.data.dataset.VideoClipDataset` needs before it lets decord read a file.
Sizes are the displayed ones (after the display matrix's rotation; ``mirrored`` says whether it
also mirrors the picture). Results go to ``probe.json`` (summary + per-video rows) and
``probe.md``; ``annotate`` also writes the index CSV with ``width``, ``height``, ``rotation``,
``mirrored``, ``decodable frames``, ``probe status`` (and ``decord exact``) columns that
``tsm-video data subset`` filters on.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tsm_video.data.av_reader import AVReader, VideoReadError
from tsm_video.data.dataset import DECORD_COLUMN
from tsm_video.data.index import VideoIndex, csv_header, iter_rows
from tsm_video.data.video_io import verify_decord
from tsm_video.fileio import atomic_path

__all__ = ["PROBE_COLUMNS", "probe_record", "probe_dataset"]

PROBE_COLUMNS = ["width", "height", "rotation", "mirrored", "decodable frames", "probe status"]

_INDEX: VideoIndex | None = None


def probe_record(
    record, deep: bool = False, deep_segments: int | None = None, check_decord: bool = False
) -> dict:
    """One video's facts: ``status`` "ok" or a failure reason, plus fps/frames/size when known.

    A file whose tail does not decode (truncated) is "ok" with the frames before the damage;
    damage anywhere else is only seen by ``deep`` and makes it "corrupt".
    """
    out = {"id": record.id, "status": "ok"}
    try:
        source = record.load()
    except KeyError:
        return {**out, "status": "missing", "error": "not in the zip parts"}
    except (ValueError, OSError) as err:
        return {**out, "status": "zip_damaged", "error": str(err)[:200]}
    try:
        with AVReader(source) as reader:
            frames = len(reader.table)
            reader.decode([0], cover=(1, 1))  # learns the orientation; tiny RGB
            try:
                reader.decode([frames - 1], cover=(1, 1))
            except VideoReadError:
                frames = len(reader.decode_prefix(cover=(1, 1)))  # a damaged tail is cut off
            height, width = reader.orientation.displayed(*reader.stored_size)
            fps = reader.table.rate(np.arange(frames)) or reader.nominal_fps
            out.update(
                fps=fps,
                width=width,
                height=height,
                rotation=reader.rotation,
                mirrored=reader.orientation.mirrored,
                reported_frames=reader.reported_frames,
                frames=frames,
                seconds=frames / fps if fps else 0.0,
            )
            if deep or deep_segments is not None:
                damage = reader.scan(deep_segments)
                if damage is not None:
                    out.update(status="corrupt", error=damage[:200])
        if check_decord:
            out["decord_exact"] = out["status"] == "ok" and verify_decord(source)
    except VideoReadError as err:
        out.update(status=err.reason, error=str(err)[:200])
    return out


def _init(index: VideoIndex) -> None:
    global _INDEX
    _INDEX = index


def _probe_at(i: int, **options) -> dict:
    return probe_record(_INDEX[i], **options)


def _histogram(values: list[float], edges: list[float]) -> dict[str, int]:
    counts, _ = np.histogram(values, bins=edges)
    return {f"{lo:g}-{hi:g}": int(c) for lo, hi, c in zip(edges[:-1], edges[1:], counts)}


def _summary(rows: list[dict], skipped_rows: Counter) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "videos": len(rows),
        "decodable": len(ok),
        "bad_by_reason": dict(Counter(r["status"] for r in rows if r["status"] != "ok")),
        "index_rows_skipped": dict(skipped_rows),
        "fps": dict(Counter(f"{r['fps']:.2f}" for r in ok).most_common()),
        "seconds": _histogram([r["seconds"] for r in ok], [0, 2, 4, 6, 8, 10, 15, 20, 30, 60, 1e9]),
        "frames": _histogram([r["frames"] for r in ok], [0, 16, 32, 48, 64, 128, 256, 512, 1e9]),
        "resolution": dict(Counter(f"{r['width']}x{r['height']}" for r in ok).most_common()),
        "over_reported_frame_count": sum(r["reported_frames"] > r["frames"] for r in ok),
        "rotated": sum(r["rotation"] != 0 for r in ok),
        "mirrored": sum(bool(r.get("mirrored")) for r in ok),
        "decord_exact": sum(bool(r.get("decord_exact")) for r in ok),
    }


def _markdown(summary: dict) -> str:
    lines = [
        "# Dataset probe",
        "",
        f"- videos: {summary['videos']}",
        f"- decodable: {summary['decodable']}",
        f"- header frame count over-reported: {summary['over_reported_frame_count']}",
        f"- rotated by a display matrix: {summary['rotated']}",
        f"- mirrored by a display matrix: {summary['mirrored']}",
        f"- decord random access proven exact (`--check-decord`): {summary['decord_exact']}",
        "",
    ]
    for title in ("bad_by_reason", "index_rows_skipped", "fps", "seconds", "frames", "resolution"):
        lines += [f"## {title}", "", "| value | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in summary[title].items()] or ["| (none) | 0 |"]
        lines.append("")
    return "\n".join(lines)


def probe_dataset(
    index: VideoIndex,
    out_dir: str | os.PathLike,
    num_workers: int = 0,
    annotate: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    path_column: str = "video",
    deep: bool = False,
    deep_segments: int | None = None,
    check_decord: bool = False,
) -> dict:
    """Probe every record; write ``probe.json``/``probe.md`` into ``out_dir``; return the summary.

    ``annotate=(csv_in, csv_out)`` copies ``csv_in`` with the probe's columns added (atomic).
    ``deep``/``deep_segments``/``check_decord``: see :func:`probe_record`.
    """
    options = {"deep": deep, "deep_segments": deep_segments, "check_decord": check_decord}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(index), desc="probe", unit="video")
    if num_workers > 0:
        with get_context("spawn").Pool(num_workers, initializer=_init, initargs=(index,)) as pool:
            rows = []
            for row in pool.imap(partial(_probe_at, **options), range(len(index)), chunksize=8):
                rows.append(row)
                bar.update()
    else:
        rows = []
        for record in index:
            rows.append(probe_record(record, **options))
            bar.update()
    bar.close()
    summary = _summary(rows, index.skipped)
    (out_dir / "probe.json").write_text(json.dumps({"summary": summary, "videos": rows}, indent=1))
    (out_dir / "probe.md").write_text(_markdown(summary))
    if annotate is not None:
        _annotate(rows, *annotate, path_column, check_decord)
    return summary


def _annotate(rows: list[dict], csv_in, csv_out, path_column: str, check_decord: bool) -> None:
    """Copy ``csv_in`` to ``csv_out`` (atomically) with the probe's columns set on every row."""
    by_id = {r["id"]: r for r in rows}
    added = PROBE_COLUMNS + ([DECORD_COLUMN] if check_decord else [])
    header = csv_header(csv_in)
    fields = header + [c for c in added if c not in header]  # a re-probe overwrites its columns
    with atomic_path(csv_out) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in iter_rows(csv_in):
            if row is None:
                continue
            found = by_id.get(str(row.get(path_column, "")).strip(), {"status": "not_indexed"})
            values = {
                "width": found.get("width", ""),
                "height": found.get("height", ""),
                "rotation": found.get("rotation", ""),
                "mirrored": {True: "yes", False: "no"}.get(found.get("mirrored"), ""),
                "decodable frames": found.get("frames", ""),
                "probe status": found["status"],
            }
            if check_decord:
                values[DECORD_COLUMN] = "yes" if found.get("decord_exact") else "no"
            writer.writerow({**row, **values})
