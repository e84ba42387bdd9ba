"""Check a dataset: which videos decode, their fps / length / resolution, and why the rest fail.

Each video is opened from where the index says (folder or zip member), its packets are
demuxed to count the frames really present, and its first and last present frames are
decoded. Results go to ``probe.json`` (summary + per-video rows) and ``probe.md``;
``annotate`` also writes the index CSV with ``width``, ``height``, ``decodable frames`` and
``probe status`` columns that ``tsm-video data subset`` can threshold on.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tsm_video.data.index import VideoIndex, iter_rows
from tsm_video.data.video_io import VideoReadError, count_packets, decode_frames, probe_video

__all__ = ["probe_record", "probe_dataset"]

_INDEX: VideoIndex | None = None


def probe_record(record) -> dict:
    """One video's facts: ``status`` "ok" or a failure reason, plus fps/frames/size when known."""
    out = {"id": record.id, "status": "ok"}
    try:
        source = record.load()
    except (KeyError, ValueError, OSError) as err:
        return {**out, "status": "zip_damaged", "error": str(err)[:200]}
    try:
        info = probe_video(source)
        frames = count_packets(source)
        out.update(fps=info.fps, width=info.width, height=info.height, reported_frames=info.num_frames)
        if frames == 0:
            raise VideoReadError("unreadable", "no video packets")
        try:
            decode_frames(source, [0, frames - 1])
        except VideoReadError as err:
            if err.reason != "too_short":
                raise
            frames -= 1  # the last packet is damaged; the frame before it must decode
            decode_frames(source, [frames - 1])
        out.update(frames=frames, seconds=frames / info.fps)
    except VideoReadError as err:
        out.update(status=err.reason, error=str(err)[:200])
    return out


def _init(index: VideoIndex) -> None:
    global _INDEX
    _INDEX = index


def _probe_at(i: int) -> dict:
    return probe_record(_INDEX[i])


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
    }


def _markdown(summary: dict) -> str:
    lines = [
        "# Dataset probe",
        "",
        f"- videos: {summary['videos']}",
        f"- decodable: {summary['decodable']}",
        f"- header frame count over-reported: {summary['over_reported_frame_count']}",
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
) -> dict:
    """Probe every record; write ``probe.json``/``probe.md`` into ``out_dir``; return the summary.

    ``annotate=(csv_in, csv_out)`` copies ``csv_in`` with the probe's columns added.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(index), desc="probe", unit="video")
    if num_workers > 0:
        with get_context("spawn").Pool(num_workers, initializer=_init, initargs=(index,)) as pool:
            rows = []
            for row in pool.imap(_probe_at, range(len(index)), chunksize=8):
                rows.append(row)
                bar.update()
    else:
        rows = []
        for record in index:
            rows.append(probe_record(record))
            bar.update()
    bar.close()
    summary = _summary(rows, index.skipped)
    (out_dir / "probe.json").write_text(json.dumps({"summary": summary, "videos": rows}, indent=1))
    (out_dir / "probe.md").write_text(_markdown(summary))
    if annotate is not None:
        by_id = {r["id"]: r for r in rows}
        with Path(annotate[0]).open(newline="", encoding="utf-8") as f:
            fields = next(csv.reader(f)) + ["width", "height", "decodable frames", "probe status"]
        with Path(annotate[1]).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in iter_rows(annotate[0]):
                if row is None:
                    continue
                found = by_id.get(str(row.get(path_column, "")).strip(), {"status": "not_indexed"})
                writer.writerow(
                    {
                        **row,
                        "width": found.get("width", ""),
                        "height": found.get("height", ""),
                        "decodable frames": found.get("frames", ""),
                        "probe status": found["status"],
                    }
                )
    return summary
