"""Errors of the EvalCrafter harness about model files (the CLI maps them to one line, exit 2).

- :class:`ModelNotFoundError` (a ``FileNotFoundError``): one file or folder is missing;
- :class:`MissingModelsError` (a ``ModelNotFoundError``): the up-front check of ``--models``
  found several missing; the message lists them all;
- :class:`IncompatibleModelError` (a ``ValueError``): present but unusable (wrong model,
  missing weights, an old config that cannot be completed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eval_crafter.metrics.base import ModelFile

__all__ = ["ModelNotFoundError", "MissingModelsError", "IncompatibleModelError"]


class ModelNotFoundError(FileNotFoundError):
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
        lines = "; ".join(f"{m.relpath} ({m.what}, for {', '.join(m.metrics)}; from {m.source})"
                          for m in self.missing)
        FileNotFoundError.__init__(
            self, f"{len(self.missing)} model file(s) missing under {models_dir}: {lines}. "
                  f"Layout: docs/evalcrafter.md")


class IncompatibleModelError(ValueError):
    """A weights file or folder is present but cannot be used (the message says why and what to get)."""
