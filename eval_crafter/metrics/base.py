"""The metric protocol every EvalCrafter metric implements, and the model-file lookup.

A metric is one class registered by name (``@register_metric`` in
``eval_crafter/metrics/__init__.py``). The runner builds it once with the models folder,
then for every video whose metadata entry it ``applies_to`` calls ``score`` (one JSON-able
record, cached per video so a rerun resumes), and at the end ``aggregate`` over all records.

How to add a metric (H6: BLIP-BLEU, detection-based count/colour)::

    # eval_crafter/metrics/blip_bleu.py
    from eval_crafter.metrics.base import Metric, VideoInput, require_model
    from eval_crafter.metrics.registry import register_metric

    @register_metric
    class BlipBleu(Metric):
        name = "blip_bleu"
        def __init__(self, models_dir, device="cpu", mode="compat", batch_size=8): ...

then add one import line to ``_METRIC_MODULES`` in ``eval_crafter/metrics/__init__.py``.

What ``meta`` holds when ``score`` is called: the metadata.json entry of the video's prompt
id, ``{"prompt": str, "attributes": {...}}``, where the runner has already put the text the
mode reads into ``"prompt"`` (``compat``: what the official main reads, ``prompts/NNNN.txt``
at HEAD, corrupted for 100 ids; ``fixed``: the metadata prompt) and kept the metadata text
under ``"metadata_prompt"``. Ground-truth attributes always come from ``"attributes"``, as in
the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from eval_crafter.errors import IncompatibleModelError, MissingModelsError, ModelNotFoundError
from eval_crafter.metrics.runtime import resolve_device, weights_identity
from tsm_video.data.video_frames import VideoFrames

__all__ = [
    "MODES",
    "BACKENDS",
    "DETECTION_SCHEDULES",
    "ModelNotFoundError",
    "MissingModelsError",
    "IncompatibleModelError",
    "ModelFile",
    "check_models_folder",
    "Metric",
    "VideoInput",
    "require_model",
    "mean_of",
]

MODES = ("compat", "fixed")
BACKENDS = ("full", "light")
DETECTION_SCHEDULES = ("track", "every-frame")
"""Detection schedules of the count/color metrics (see :mod:`eval_crafter.metrics.detection`)."""


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass(frozen=True)
class ModelFile:
    """One file or folder a metric loads: its path under ``--models``, what it is, its source.

    A ``relpath`` ending in ``/`` is a transformers folder: present when it holds
    ``config.json`` and a weights file (``*.safetensors`` / ``*.bin`` or their index).
    """

    relpath: str
    what: str
    source: str
    metrics: tuple[str, ...] = ()

    def present(self, models_dir: Path | str) -> bool:
        """Whether it is there under ``models_dir``."""
        path = Path(models_dir) / self.relpath
        if not self.relpath.endswith("/"):
            return path.is_file()
        return (path / "config.json").is_file() and any(any(path.glob(p)) for p in _WEIGHT_PATTERNS)


def check_models_folder(models_dir: Path | str, needed: list[ModelFile]) -> None:
    """Raise :class:`MissingModelsError` listing every entry of ``needed`` absent from ``models_dir``.

    Entries with the same ``relpath`` (a folder two metrics share) are merged, their metrics
    listed together.
    """
    merged: dict[str, ModelFile] = {}
    for item in needed:
        old = merged.get(item.relpath)
        metrics = (*old.metrics, *item.metrics) if old else item.metrics
        merged[item.relpath] = ModelFile(item.relpath, item.what, item.source, tuple(dict.fromkeys(metrics)))
    if not Path(models_dir).is_dir():
        raise MissingModelsError(models_dir, list(merged.values()))
    missing = [m for m in merged.values() if not m.present(models_dir)]
    if missing:
        raise MissingModelsError(models_dir, missing)


def require_model(models_dir: Path | str, relpath: str, what: str, source: str) -> Path:
    """Return ``models_dir / relpath`` if it exists, else raise :class:`ModelNotFoundError`."""
    path = Path(models_dir) / relpath
    if not path.exists():
        raise ModelNotFoundError(path, what, source)
    return path


@dataclass
class VideoInput:
    """One video to score.

    Attributes:
        id: prompt id, the file stem (``"0042"``).
        path: the video file.
        frames: ``(F, H, W, 3)`` uint8 RGB, every frame of the file, full size: an array, or
            (from the runner) a :class:`~tsm_video.data.video_frames.VideoFrames` that decodes
            only what is indexed. Metrics index the frames they need (``frames[indices]``) and
            walk all frames in chunks (``frames[start:stop]``), never ``np.asarray(frames)``.
        fps: the average frame rate of the frames' timestamps.
    """

    id: str
    path: Path
    frames: np.ndarray | VideoFrames
    fps: float


def mean_of(records: dict[str, dict], key: str) -> tuple[float, int]:
    """Mean of ``record[key]`` over records that hold it (``sum / len`` as the official logs).

    Returns ``(mean, n)``; the mean is NaN when no record holds the key.
    """
    values = [float(r[key]) for r in records.values() if key in r and r[key] is not None]
    if not values:
        return math.nan, 0
    return sum(values) / len(values), len(values)


class Metric:
    """Base class of the six metrics (and their light-backend twins).

    Subclasses set ``name`` (the CLI name), ``backend`` (``"full"`` or ``"light"``) and
    implement ``score`` and ``aggregate``; ``applies_to`` defaults to "every video";
    ``required_files`` lists what the constructor loads (the runner checks them all up front).
    ``device`` may be ``"auto"``; ``fp32`` forces float32 where the official run on CUDA uses
    float16. ``runtime`` (device, dtypes, weights identity) goes into the cache key and the
    report: constructors fill it with ``record_weights`` / ``record_dtype``.
    Records may hold numpy arrays (the runner's cache stores them as .npy files beside the
    JSON); ``histogram_key`` names the per-video number the report plots.
    Constructors load their weights from ``models_dir`` (``require_model`` for each file)
    and raise :class:`ModelNotFoundError` when one is missing.
    """

    name: ClassVar[str]
    backend: ClassVar[str] = "full"
    options: ClassVar[tuple[str, ...]] = ()  # extra constructor keywords, taken from EvalSettings
    histogram_key: ClassVar[str | None] = None  # per-video record key the report plots

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.models_dir = Path(models_dir)
        self.device = resolve_device(device)
        self.mode = mode
        self.batch_size = batch_size
        self.fp32 = fp32
        self.runtime: dict[str, Any] = {"device": str(self.device), "fp32": fp32, "dtypes": {}, "weights": {}}

    @classmethod
    def required_files(cls, mode: str = "compat", **options: Any) -> list[ModelFile]:
        """The files/folders under ``--models`` this metric loads in ``mode`` with ``options``
        (none by default)."""
        return []

    def record_weights(self, relpath: str) -> None:
        """Put the identity of ``models_dir / relpath`` into ``runtime`` (cache key, report)."""
        self.runtime["weights"][relpath] = weights_identity(self.models_dir / relpath)

    def record_dtype(self, part: str, dtype: Any) -> None:
        """Note the dtype a model part runs in (``torch.float16`` -> ``"float16"``)."""
        self.runtime["dtypes"][part] = str(dtype).removeprefix("torch.")

    def applies_to(self, meta: dict) -> bool:
        """Whether this metric scores the video of ``meta`` (one metadata.json entry)."""
        return True

    def score(self, video: VideoInput, meta: dict) -> dict:
        """One video's JSON-able record (floats, ints, strings, lists of them)."""
        raise NotImplementedError

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        """Combine per-video records (keyed by id) into ``{"value": float as reported, ...}``.

        ``value`` is on the scale EvalCrafter reports (x100 for 0..1 scores); ``official``
        maps the official log key(s) to the "Final average" value (``{"blip_bleu": 0.22}``,
        0..1 scale, fed to :func:`eval_crafter.aggregate.evalcrafter_scores`); ``n`` is the
        number of videos averaged. Extra keys are free-form but JSON-able.
        """
        raise NotImplementedError
