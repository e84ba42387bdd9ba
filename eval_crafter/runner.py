"""Run EvalCrafter metrics over a folder of videos named by prompt id; resumable.

``evaluate`` lists the videos (``0000.mp4`` ... ; the stem must be a prompt id of the
metadata), checks the models folder for every file the requested metrics load (all
missing files listed in one error), builds the metrics, then per video: skips it if every
applicable metric has a cached record, else opens it as a
:class:`~tsm_video.data.video_frames.VideoFrames` (a lazy frame array: each metric decodes
only the frames it indexes, full size, and the chunk-walking ones hold one chunk at a time)
and scores it. Unreadable videos — and videos whose frames a metric needs do not decode — are
counted and skipped; names that are no prompt id are an error unless ``skip_unknown`` (then counted).
Finally each metric aggregates its records and the official EvalCrafter aggregation is
applied to what was measured.

Order: ``compat`` visits videos in ``os.listdir`` order, as the official mains do (IS
depends on it); ``fixed`` sorts them by name.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval_crafter.aggregate import evalcrafter_scores
from eval_crafter.cache import RecordCache
from eval_crafter.errors import EvalInputError, MissingVideosError
from eval_crafter.metrics import BACKENDS, MODES, Metric, VideoInput, get_metric
from eval_crafter.metrics.base import DETECTION_SCHEDULES, check_models_folder
from eval_crafter.metrics.runtime import resolve_device
from eval_crafter.prompts import entries_for_mode, load_metadata
from tsm_video.data.av_reader import VideoReadError
from tsm_video.data.video_frames import VideoFrames
from tsm_video.errors import TSMVideoError

__all__ = [
    "VIDEO_EXTENSIONS",
    "DEFAULT_METRICS",
    "UnknownVideoError",
    "EvalSettings",
    "list_videos",
    "evaluate",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
DEFAULT_METRICS = ("is", "action", "amplitude", "blip_bleu", "color", "count")


class UnknownVideoError(TSMVideoError, ValueError):
    """Video names that are no prompt id of the metadata."""


@dataclass
class EvalSettings:
    """What to evaluate and how (the CLI's options)."""

    videos: Path
    models: Path | None
    out: Path
    metrics: tuple[str, ...] = DEFAULT_METRICS
    mode: str = "compat"
    backend: str = "full"
    device: str = "auto"
    fp32: bool = False
    detection: str = "track"
    batch_size: int = 8
    prompts: Path | None = None
    skip_unknown: bool = False
    progress: bool = True
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EvalInputError(f"unknown mode {self.mode!r}; choose one of {MODES}")
        if self.backend not in BACKENDS:
            raise EvalInputError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if self.detection not in DETECTION_SCHEDULES:
            raise EvalInputError(
                f"unknown detection schedule {self.detection!r}; choose one of {DETECTION_SCHEDULES}"
            )
        if self.backend == "full" and self.models is None:
            raise EvalInputError(
                "the full backend needs --models DIR (its weights; layout: docs/evalcrafter.md), or use "
                "--backend light for the synthetic domain"
            )
        self.videos, self.out = Path(self.videos), Path(self.out)
        if self.cache_dir is None:
            self.cache_dir = self.out.parent / f"{self.out.stem}.cache"


def list_videos(folder: Path, metadata: dict, mode: str, skip_unknown: bool) -> tuple[list[Path], list[str]]:
    """Video files of ``folder`` in visiting order, and the names skipped as unknown."""
    if not Path(folder).is_dir():
        raise MissingVideosError(f"videos folder {folder} does not exist")
    names = [n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(VIDEO_EXTENSIONS)]
    if not names:
        raise EvalInputError(f"no videos in {folder} (expected <prompt id>.mp4 files, e.g. 0000.mp4)")
    if mode == "fixed":
        names.sort()
    unknown = [n for n in names if Path(n).stem not in metadata]
    if unknown and not skip_unknown:
        raise UnknownVideoError(
            f"{len(unknown)} video(s) in {folder} are not named by a prompt id (e.g. 0042.mp4): "
            f"{sorted(unknown)[:10]}; rename them or pass --skip-unknown to count and skip them"
        )
    if len(unknown) == len(names):
        raise EvalInputError(
            f"none of the {len(names)} video(s) in {folder} is named by a prompt id "
            f"(e.g. 0042.mp4); nothing to evaluate"
        )
    stems = Counter(Path(n).stem for n in names)
    duplicates = sorted(s for s, c in stems.items() if c > 1)
    if duplicates:
        raise EvalInputError(f"several files share a prompt id in {folder}: {duplicates[:10]}")
    return [Path(folder) / n for n in names if n not in unknown], unknown


def _build_metrics(settings: EvalSettings) -> dict[str, Metric]:
    classes = {name: get_metric(name, settings.backend) for name in settings.metrics}
    options = {name: {k: getattr(settings, k) for k in cls.options} for name, cls in classes.items()}
    device = resolve_device(settings.device)  # a bad --device fails before the folder check
    if settings.backend == "full":
        needed = [
            f for name, cls in classes.items() for f in cls.required_files(settings.mode, **options[name])
        ]
        check_models_folder(settings.models, needed)
    return {
        name: cls(
            settings.models,
            device=device,
            mode=settings.mode,
            batch_size=settings.batch_size,
            fp32=settings.fp32,
            **options[name],
        )
        for name, cls in classes.items()
    }


def evaluate(settings: EvalSettings) -> dict[str, Any]:
    """Score every video with every metric; returns the report dict (see report.py)."""
    official_meta = settings.prompts is None
    metadata = load_metadata(settings.prompts)
    entries = entries_for_mode(metadata, settings.mode, official_meta)
    videos, unknown = list_videos(settings.videos, metadata, settings.mode, settings.skip_unknown)
    metrics = _build_metrics(settings)
    caches = {
        name: RecordCache(
            settings.cache_dir / f"{name}-{settings.mode}-{settings.backend}", runtime=metric.runtime
        )
        for name, metric in metrics.items()
    }
    records: dict[str, dict[str, dict]] = {name: {} for name in metrics}
    skipped: Counter = Counter({"unknown_name": len(unknown)} if unknown else {})
    failures: dict[str, dict[str, str]] = {}
    cached = Counter()
    for path in tqdm(videos, desc="evalcrafter", unit="video", disable=not settings.progress):
        vid, meta = path.stem, entries[path.stem]
        todo = []
        for name, metric in metrics.items():
            if not metric.applies_to(meta):
                continue
            record = caches[name].load(vid, path, meta)
            if record is None:
                todo.append(name)
            else:
                records[name][vid] = record
                cached[name] += 1
        if not todo:
            continue
        try:
            frames = VideoFrames(path)
        except Exception as err:  # any decoder failure: count and go on
            skipped["unreadable"] += 1
            failures.setdefault("read", {})[vid] = f"{type(err).__name__}: {err}"
            continue
        with frames:  # at least one frame: VideoFrames decodes the first to open
            video = VideoInput(id=vid, path=path, frames=frames, fps=float(frames.fps))
            for name in todo:
                try:
                    record = metrics[name].score(video, meta)
                except VideoReadError as err:  # frames this metric needs are damaged
                    skipped["unreadable"] += 1
                    failures.setdefault("read", {})[vid] = f"{type(err).__name__}: {err}"
                    break
                except ValueError as err:  # bad input for this metric (e.g. too short)
                    failures.setdefault(name, {})[vid] = str(err)
                    continue
                caches[name].save(vid, path, meta, record)
                records[name][vid] = dict(record)
    # every metric aggregates its records in visiting order (compat IS depends on it)
    order = {p.stem: i for i, p in enumerate(videos)}
    aggregates, official = {}, {}
    for name, metric in metrics.items():
        ordered = dict(sorted(records[name].items(), key=lambda kv: order[kv[0]]))
        if not ordered:
            aggregates[name] = {"value": float("nan"), "n": 0, "note": "no video applies"}
            continue
        aggregates[name] = metric.aggregate(ordered, metadata)
        official.update(aggregates[name].get("official", {}))
    return {
        "tool": "tsm-video eval evalcrafter",
        "mode": settings.mode,
        "backend": settings.backend,
        "label": _label(settings),
        "videos": str(settings.videos),
        "metadata": "packaged official metadata.json" if official_meta else str(settings.prompts),
        "num_videos": len(videos),
        "skipped": dict(skipped),
        "failures": failures,
        "cached": dict(cached),
        "runtime": {name: metric.runtime for name, metric in metrics.items()},
        "metrics": aggregates,
        "evalcrafter": evalcrafter_scores(official) if settings.backend == "full" else None,
        "per_video": _per_video(records),
    }


def _label(settings: EvalSettings) -> str:
    if settings.backend == "light":
        return f"light backend ({settings.mode} rules) -- synthetic domain, not EvalCrafter numbers"
    if settings.detection != "track" and {"count", "color"} & set(settings.metrics):
        return (
            f"EvalCrafter ({settings.mode}; count/color: detection on every frame, not the official tracker)"
        )
    return f"EvalCrafter ({settings.mode})"


def _per_video(records: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Records by video then metric; arrays are replaced by their shape."""
    out: dict[str, dict[str, dict]] = {}
    for name, by_video in records.items():
        for vid, record in by_video.items():
            out.setdefault(vid, {})[name] = {
                k: ({"array_shape": list(v.shape)} if hasattr(v, "shape") and getattr(v, "ndim", 0) else v)
                for k, v in record.items()
            }
    return dict(sorted(out.items()))
