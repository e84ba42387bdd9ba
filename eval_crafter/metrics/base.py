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

from tsm_video.errors import TSMVideoError

__all__ = [
    "MODES",
    "BACKENDS",
    "ModelNotFoundError",
    "Metric",
    "VideoInput",
    "require_model",
    "mean_of",
]

MODES = ("compat", "fixed")
BACKENDS = ("full", "light")


class ModelNotFoundError(TSMVideoError, FileNotFoundError):
    """A weight file or folder a metric needs is absent from ``--models``.

    The message names the expected path and where the official release publishes it.
    """

    def __init__(self, path: Path, what: str, source: str) -> None:
        self.path = Path(path)
        self.what = what
        self.source = source
        super().__init__(
            f"{what}: expected {self.path} (not found). Get it from {source} and place it "
            f"there (layout: docs/evalcrafter.md)."
        )


def require_model(models_dir: Path | str, relpath: str, what: str, source: str) -> Path:
    """Return ``models_dir / relpath`` if it exists, else raise :class:`ModelNotFoundError`."""
    path = Path(models_dir) / relpath
    if not path.exists():
        raise ModelNotFoundError(path, what, source)
    return path


@dataclass
class VideoInput:
    """One decoded video.

    Attributes:
        id: prompt id, the file stem (``"0042"``).
        path: the video file.
        frames: ``(F, H, W, 3)`` uint8 RGB, every frame of the file.
        fps: the container's frame rate.
    """

    id: str
    path: Path
    frames: np.ndarray
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
    implement ``score`` and ``aggregate``; ``applies_to`` defaults to "every video".
    Records may hold numpy arrays (the runner's cache stores them as .npy files beside the
    JSON); ``histogram_key`` names the per-video number the report plots.
    Constructors load their weights from ``models_dir`` (``require_model`` for each file)
    and raise :class:`ModelNotFoundError` when one is missing.
    """

    name: ClassVar[str]
    backend: ClassVar[str] = "full"
    histogram_key: ClassVar[str | None] = None  # per-video record key the report plots

    def __init__(self, models_dir: Path | str, device: Any = "cpu", mode: str = "compat",
                 batch_size: int = 8) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.models_dir = Path(models_dir)
        self.device = device
        self.mode = mode
        self.batch_size = batch_size

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
