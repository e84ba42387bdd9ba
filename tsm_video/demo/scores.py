"""Light EvalCrafter-style scores of generated clips against the synthetic ground truth.

Colour, count and amplitude are the light backend's metrics (:mod:`eval_crafter.metrics.light`);
colour uses the ``fixed`` hue rule (the official ``compat`` rule multiplies hues by uint8 object
ids, so a frame with several objects reads a wrong hue), count and amplitude the official
rules; motion direction is read the same way the light backend
reads travel — the segmented foreground's centroid from the first to the last frame where it is
visible — and compared with the prompted direction. Colour is only scored for prompts whose
colour the official hue rule can name (:data:`eval_crafter.scoring.COLOR_BINS`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["SCORE_NAMES", "motion_direction", "light_scores"]

SCORE_NAMES = ("color", "count", "direction", "amplitude")


def motion_direction(frames: np.ndarray) -> str | None:
    """(F, H, W, 3) uint8 RGB → "left" | "right" | "up" | "down" from the foreground centroid's
    displacement over the clip (its dominant axis); None when no foreground is visible twice."""
    from eval_crafter.metrics.light import segment_shapes

    centroids = []
    for frame in frames:
        ys, xs = np.nonzero(segment_shapes(frame))
        if len(xs):
            centroids.append((xs.mean(), ys.mean()))
    if len(centroids) < 2:
        return None
    dx, dy = np.subtract(centroids[-1], centroids[0])
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def light_scores(clips: list[np.ndarray], truths: list[dict], fps: float = 8.0) -> dict[str, dict]:
    """Score clips (each (F, H, W, 3) uint8) against ground-truth scenes (``data_tools.synth``
    ground-truth entries: ``color``, ``shape``, ``count``, ``speed``, ``direction``).

    Returns ``{name: {"value": percent, "n": clips scored}}`` for :data:`SCORE_NAMES`
    (value NaN when no clip applies).
    """
    from eval_crafter.metrics.base import VideoInput
    from eval_crafter.metrics.light import LightAmplitude, LightColor, LightCount
    from eval_crafter.scoring import COLOR_BINS
    from eval_crafter.synthetic import SPEED_TO_AMP

    if len(clips) != len(truths):
        raise ValueError(f"{len(clips)} clips but {len(truths)} ground-truth scenes")
    hue_names = {name for _, name in COLOR_BINS}
    metrics = {"color": LightColor(mode="fixed"), "count": LightCount(), "amplitude": LightAmplitude()}
    keys = {"color": "color_score", "count": "count_score", "amplitude": "light_motion_ac_score"}
    values: dict[str, list[float]] = {name: [] for name in SCORE_NAMES}
    for i, (frames, truth) in enumerate(zip(clips, truths)):
        video = VideoInput(id=f"{i:04d}", path=Path(f"{i:04d}.mp4"), frames=frames, fps=fps)
        meta = {
            "prompt": truth.get("caption", ""),
            "attributes": {
                "color": f"{truth['color']} {truth['shape']}",
                "count": f"{truth['count']} {truth['shape']}",
                "amp": SPEED_TO_AMP[truth["speed"]],
            },
        }
        for name, metric in metrics.items():
            if name == "color" and truth["color"] not in hue_names:
                continue
            values[name].append(float(metric.score(video, meta)[keys[name]]))
        values["direction"].append(float(motion_direction(frames) == truth["direction"]))
    return {
        name: {"value": 100 * float(np.mean(v)) if v else math.nan, "n": len(v)} for name, v in values.items()
    }
