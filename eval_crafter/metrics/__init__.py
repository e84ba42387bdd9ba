"""EvalCrafter metrics, registered by name.

Each metric module registers its classes with ``@register_metric`` when imported; the list
below is the only place that names them (add one line per new module). They are imported on the
first use of ``METRICS``, ``LIGHT_METRICS`` or :func:`get_metric` (:func:`load_metric_modules`),
not by ``import eval_crafter.metrics``: their dependencies (transformers, ...) take seconds, and
an evaluation checks its inputs before it needs a metric.
"""

from __future__ import annotations

import importlib

from eval_crafter.metrics import registry
from eval_crafter.metrics.base import (
    BACKENDS,
    MODES,
    Metric,
    ModelNotFoundError,
    VideoInput,
    require_model,
)
from eval_crafter.metrics.registry import get_metric, register_metric

__all__ = [
    "BACKENDS",
    "MODES",
    "LIGHT_METRICS",
    "METRICS",
    "Metric",
    "ModelNotFoundError",
    "VideoInput",
    "get_metric",
    "load_metric_modules",
    "register_metric",
    "require_model",
]

_METRIC_MODULES = (
    "eval_crafter.metrics.inception",
    "eval_crafter.metrics.amplitude",
    "eval_crafter.metrics.action",
    "eval_crafter.metrics.light",
    "eval_crafter.metrics.blip_bleu",
    "eval_crafter.metrics.detection",
)


def load_metric_modules() -> None:
    """Import every metric module (each registers its classes); later calls cost nothing."""
    for module in _METRIC_MODULES:
        importlib.import_module(module)


def __getattr__(name: str):  # PEP 562: the full tables only once every metric is registered
    if name in ("METRICS", "LIGHT_METRICS"):
        load_metric_modules()
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
