"""EvalCrafter metrics, registered by name.

Each metric module registers its classes with ``@register_metric`` when imported; the list
below is the only place that names them (add one line per new module).
"""

from __future__ import annotations

import importlib

from eval_crafter.metrics.base import (
    BACKENDS,
    MODES,
    Metric,
    ModelNotFoundError,
    VideoInput,
    require_model,
)
from eval_crafter.metrics.registry import LIGHT_METRICS, METRICS, get_metric, register_metric

__all__ = [
    "BACKENDS",
    "MODES",
    "LIGHT_METRICS",
    "METRICS",
    "Metric",
    "ModelNotFoundError",
    "VideoInput",
    "get_metric",
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

for _module in _METRIC_MODULES:
    importlib.import_module(_module)
