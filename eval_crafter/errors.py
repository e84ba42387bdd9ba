"""Errors a user's evaluation input can cause (flags, the videos folder, prompt metadata, report
files). Each derives from :class:`tsm_video.errors.TSMVideoError`, so ``tsm-video eval`` prints
it as one line with exit code 2, and from the builtin it replaced, so ``except`` clauses written
for that builtin keep working."""

from __future__ import annotations

from tsm_video.errors import TSMVideoError

__all__ = ["EvalInputError", "MissingVideosError", "UnknownMetricError"]


class EvalInputError(TSMVideoError, ValueError):
    """An evaluation input that cannot be used; the message names it and what is valid."""


class MissingVideosError(TSMVideoError, FileNotFoundError):
    """The videos folder does not exist."""


class UnknownMetricError(TSMVideoError, KeyError):
    """A metric name no backend registers; the message lists the available ones."""

    def __str__(self) -> str:  # KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""
