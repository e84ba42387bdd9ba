"""Errors a user's evaluation input can cause: model files, flags, the videos folder, prompt
metadata, report files.

Each derives from :class:`tsm_video.errors.TSMVideoError`, so ``tsm-video eval`` prints it as one
line with exit code 2, and from the builtin it replaced, so ``except`` clauses written for that
builtin keep working:

- :class:`ModelNotFoundError` (a ``FileNotFoundError``): one file or folder is missing;
- :class:`MissingModelsError` (a ``ModelNotFoundError``): the up-front check of ``--models``
  found several missing; the message lists them all;
- :class:`IncompatibleModelError` (a ``ValueError``): present but unusable (wrong model,
  missing weights, an old config that cannot be completed);
- :class:`EvalInputError` (a ``ValueError``): a bad flag, prompt file, videos folder or report;
- :class:`MissingVideosError` (a ``FileNotFoundError``): the videos folder does not exist;
- :class:`UnknownMetricError` (a ``KeyError``): a metric name no backend registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tsm_video.errors import TSMVideoError

if TYPE_CHECKING:
    from eval_crafter.metrics.base import ModelFile

__all__ = [
    "ModelNotFoundError",
    "MissingModelsError",
    "IncompatibleModelError",
    "EvalInputError",
    "MissingVideosError",
    "UnknownMetricError",
]


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


class MissingModelsError(ModelNotFoundError):
    """Several weight files or folders are absent from ``--models``; the message lists all."""

    def __init__(self, models_dir: Path, missing: list[ModelFile]) -> None:
        self.missing = list(missing)
        self.path = Path(models_dir)
        self.what, self.source = "model files", "docs/evalcrafter.md"
        lines = "; ".join(
            f"{m.relpath} ({m.what}, for {', '.join(m.metrics)}; from {m.source})" for m in self.missing
        )
        FileNotFoundError.__init__(
            self,
            f"{len(self.missing)} model file(s) missing under {models_dir}: {lines}. "
            f"Layout: docs/evalcrafter.md",
        )


class IncompatibleModelError(TSMVideoError, ValueError):
    """A weights file or folder is present but cannot be used (the message says why and what to get)."""


class EvalInputError(TSMVideoError, ValueError):
    """An evaluation input that cannot be used; the message names it and what is valid."""


class MissingVideosError(TSMVideoError, FileNotFoundError):
    """The videos folder does not exist."""


class UnknownMetricError(TSMVideoError, KeyError):
    """A metric name no backend registers; the message lists the available ones."""

    def __str__(self) -> str:  # KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""
