"""Metric registries by name: ``METRICS`` (full backend) and ``LIGHT_METRICS`` (light)."""

from __future__ import annotations

from eval_crafter.errors import UnknownMetricError
from eval_crafter.metrics.base import BACKENDS, Metric

__all__ = ["METRICS", "LIGHT_METRICS", "register_metric", "get_metric"]

METRICS: dict[str, type[Metric]] = {}
LIGHT_METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register ``cls`` under ``cls.name`` in its backend's registry."""
    if cls.backend not in BACKENDS:
        raise ValueError(f"{cls.__name__}.backend={cls.backend!r}; choose one of {BACKENDS}")
    table = METRICS if cls.backend == "full" else LIGHT_METRICS
    if cls.name in table and table[cls.name] is not cls:
        raise ValueError(f"metric {cls.name!r} ({cls.backend}) is already registered")
    table[cls.name] = cls
    return cls


def get_metric(name: str, backend: str = "full") -> type[Metric]:
    """The registered class for ``name``; an unknown name lists the valid ones."""
    from eval_crafter.metrics import load_metric_modules

    load_metric_modules()  # every metric module registers its classes on import

    table = METRICS if backend == "full" else LIGHT_METRICS
    if name not in table:
        raise UnknownMetricError(f"unknown {backend} metric {name!r}; available: {sorted(table)}")
    return table[name]
