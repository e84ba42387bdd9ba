"""EvalCrafter's final aggregation (``eval_from_metrics.py``): reported values and the
four category scores with the official regression weights.

Inputs are the numbers of the "Final average" log lines: VQA_A / VQA_T on DOVER's 0-100
scale, IS and flow_score raw, warping_error raw, everything else 0..1; ``None`` is a
missing log (stays NaN and propagates, as officially). The official parser reads a log
line with ``float(content.split("Final")[1].split(": ")[1].split(",")[0])``;
:func:`parse_final_average` is that rule, so a log written the way the official
``action_score.py`` writes it (a tensor repr) fails the same way (``ValueError``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "OFFICIAL_METRICS",
    "CATEGORY_WEIGHTS",
    "final_average_line",
    "parse_final_average",
    "evalcrafter_scores",
]

OFFICIAL_METRICS = (
    "VQA_A",
    "VQA_T",
    "IS",
    "clip_temp_score",
    "warping_error",
    "face_consistency_score",
    "action_score",
    "motion_ac_score",
    "flow_score",
    "clip_score",
    "blip_bleu",
    "sd_score",
    "detection_score",
    "color_score",
    "count_score",
    "ocr_score",
    "celebrity_id_score",
)

# (weights, intercept, intercept scaled by 5) per category, as in eval_from_metrics.py
CATEGORY_WEIGHTS = {
    "visual_quality": ([0.03004555, 0.02887537, -0.01382558], 0.08707462696457707, True),
    "temporal_consistency": ([2.92492244, 0.45475678, 0.17561504], -3.42274050899774, True),
    "motion_quality": ([-0.01641512, -0.01340959, -0.10517075], 0.1297562020899355, True),
    "text_video_alignment": (
        [-0.0701577, 0.02561424, 0.05566109, 0.0173974, -0.020954, 0.03069167, 0.00372351, 0.22686202],
        -0.30683181901390977,
        False,
    ),
}


def final_average_line(metric: str, value: object, n: int) -> str:
    """The official last log line of one metric run (without the timestamp)."""
    return f"Final average {metric}: {value}, Total videos: {n}"


def parse_final_average(content: str) -> float:
    """The official log parser: ``float(content.split("Final")[1].split(": ")[1].split(",")[0])``."""
    return float(content.split("Final")[1].split(": ")[1].split(",")[0])


def _inputs(m: dict[str, float]) -> dict[str, np.ndarray]:
    return {
        "visual_quality": np.array([m["VQA_A"] / 100, m["VQA_T"] / 100, m["IS"] / 100]),
        "temporal_consistency": np.array(
            [m["clip_temp_score"], 1 - m["warping_error"], m["face_consistency_score"]]
        ),
        "motion_quality": np.array([m["action_score"], m["motion_ac_score"], m["flow_score"] / 100]),
        "text_video_alignment": np.array(
            [
                m["clip_score"],
                m["blip_bleu"],
                m["sd_score"],
                m["detection_score"],
                m["color_score"],
                m["count_score"],
                1 - m["ocr_score"],
                1 - m["celebrity_id_score"],
            ]
        ),
    }


def _reported(m: dict[str, float]) -> dict[str, float]:
    """Values as the official "Metrics:" line prints them (the same float expressions)."""
    scaled = dict(m)
    for key in ("VQA_A", "VQA_T", "IS", "flow_score"):
        scaled[key] /= 100
    scaled["warping_error"] *= 100
    reported = {key: round(value * 100, 2) for key, value in scaled.items()}
    reported["warping_error"] = round(reported["warping_error"] / 10000, 4)
    return reported


def evalcrafter_scores(final_averages: dict[str, float | None]) -> dict:
    """Aggregate the 17 official per-metric averages exactly as ``eval_from_metrics.py``.

    Args:
        final_averages: metric name -> the "Final average" value (see module docstring);
            absent or ``None`` -> NaN.

    Returns:
        ``{"metrics_reported": {...}, "visual_quality", "temporal_consistency",
        "motion_quality", "text_video_alignment", "total", "log_lines": [...]}``; category
        scores are x100 and NaN when any of their inputs is missing.
    """
    unknown = set(final_averages) - set(OFFICIAL_METRICS)
    if unknown:
        raise KeyError(f"unknown metrics {sorted(unknown)}; known: {list(OFFICIAL_METRICS)}")
    m = {key: math.nan for key in OFFICIAL_METRICS}
    for key, value in final_averages.items():
        if value is not None:
            m[key] = float(value)
    inputs = _inputs(m)
    out: dict = {}
    for name, (weights, intercept, scale_intercept) in CATEGORY_WEIGHTS.items():
        w = np.array(weights) * 5
        b = intercept * 5 if scale_intercept else intercept
        out[name] = float((np.dot(w, inputs[name]) + b) * 100)
    total = (
        out["visual_quality"]
        + out["temporal_consistency"]
        + out["motion_quality"]
        + out["text_video_alignment"]
    )
    reported = _reported(m)
    out = {"metrics_reported": reported, **out, "total": total}
    out["log_lines"] = [
        f"Metrics: {reported}",
        f"Results: Visual Quality {out['visual_quality']:.2f}, Text-Video Alignment "
        f"{out['text_video_alignment']:.2f}, Motion Quality {out['motion_quality']:.2f}, "
        f"Temporal Consistency {out['temporal_consistency']:.2f}, Total {total:.0f} ",
    ]
    return out
