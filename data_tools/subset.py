"""Reproducible N-clip subsets of an OpenVid-format CSV (the paper trains on 70,000 clips).

Rows pass numeric thresholds on any columns (score columns, ``seconds``, ``frame``, ``fps``,
and ``width``/``height`` as added by ``tsm-video data probe --annotate``); then ``n`` rows are
drawn with a seeded generator, optionally stratified by a column (categorical, or numeric cut
into quantile bins) with strata sized in proportion. Rows a probe marked bad (a ``probe
status`` column other than ``ok``, e.g. ``corrupt`` from ``probe --deep``) are dropped and
counted as ``probe:<status>``. The output keeps the input's columns and row order.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tsm_video.data.index import csv_header, iter_rows
from tsm_video.errors import TSMVideoError
from tsm_video.fileio import atomic_path

__all__ = ["SubsetError", "SubsetReport", "make_subset", "allocate"]

PROBE_STATUS = "probe status"  # written by `tsm-video data probe --annotate`


class SubsetError(TSMVideoError, ValueError):
    """The subset cannot be made from this CSV (a bounded or stratified column is absent)."""


@dataclass
class SubsetReport:
    """What a subset run did: rows read, eligible, written, and rows dropped by reason."""

    rows: int = 0
    eligible: int = 0
    written: int = 0
    dropped: Counter = field(default_factory=Counter)


def allocate(sizes: list[int], n: int) -> list[int]:
    """Split ``n`` draws over strata in proportion to ``sizes`` (largest remainder), capped by size."""
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    total = sizes_arr.sum()
    if n >= total:
        return [int(s) for s in sizes]
    quota = sizes_arr * n / total
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    return take.tolist()


def _strata(values: list, bins: int) -> list:
    """Stratum label per row: the value itself, or its quantile bin when every value is numeric."""
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        return values
    edges = np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, numbers, side="right").tolist()


def make_subset(
    csv_in: str | os.PathLike,
    csv_out: str | os.PathLike,
    n: int = 70_000,
    seed: int = 0,
    minimum: dict[str, float] | None = None,
    maximum: dict[str, float] | None = None,
    stratify: str | None = None,
    bins: int = 5,
) -> SubsetReport:
    """Write a seeded subset of ``csv_in`` to ``csv_out``; same inputs → same file.

    ``minimum``/``maximum`` map column names to inclusive bounds; a row with a missing or
    non-numeric value in a bounded column is dropped (counted under ``missing:<column>``).
    """
    minimum, maximum = minimum or {}, maximum or {}
    fieldnames = csv_header(csv_in)
    for column in [*minimum, *maximum, *([stratify] if stratify else [])]:
        if column not in fieldnames:
            hint = (
                " (width/height come from `tsm-video data probe --annotate`)"
                if column in ("width", "height")
                else ""
            )
            raise SubsetError(f"{csv_in} has no column {column!r}{hint}; columns: {', '.join(fieldnames)}")
    report, kept = SubsetReport(), []
    for row in iter_rows(csv_in):
        report.rows += 1
        if row is None:
            report.dropped["malformed_row"] += 1
            continue
        status = (row.get(PROBE_STATUS) or "ok").strip()
        reason = None if status == "ok" else f"probe:{status}"
        for column, bound in [
            *((c, (lo, None)) for c, lo in minimum.items()),
            *((c, (None, hi)) for c, hi in maximum.items()),
        ]:
            if reason:
                break
            try:
                value = float(row[column])
            except (TypeError, ValueError):
                reason = f"missing:{column}"
                break
            if (bound[0] is not None and value < bound[0]) or (bound[1] is not None and value > bound[1]):
                reason = f"threshold:{column}"
                break
        if reason:
            report.dropped[reason] += 1
        else:
            kept.append(row)
    report.eligible = len(kept)
    rng = np.random.default_rng(seed)
    if stratify:
        labels = _strata([row[stratify] for row in kept], bins)
        groups: dict = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        keys = sorted(groups, key=str)
        chosen = []
        for key, take in zip(keys, allocate([len(groups[k]) for k in keys], n)):
            chosen += rng.choice(groups[key], size=take, replace=False).tolist()
    else:
        chosen = rng.choice(len(kept), size=min(n, len(kept)), replace=False).tolist()
    chosen.sort()
    with atomic_path(csv_out) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(kept[i] for i in chosen)
    report.written = len(chosen)
    return report
