"""The official EvalCrafter aggregation (eval_from_metrics.py) against its reference cases."""

from __future__ import annotations

import math

import pytest
from evalcrafter_cases import cases

from eval_crafter.aggregate import (
    OFFICIAL_METRICS,
    evalcrafter_scores,
    final_average_line,
    parse_final_average,
)

_CATEGORIES = ("visual_quality", "text_video_alignment", "motion_quality", "temporal_consistency", "total")


def _parsed(values: dict) -> dict:
    """Each value through the official log round trip: write the line, parse it back."""
    return {
        k: None if v is None else parse_final_average(final_average_line(k, v, 50)) for k, v in values.items()
    }


def _same(actual: float, expected) -> bool:
    expected = float(expected)
    return math.isnan(actual) if math.isnan(expected) else actual == expected


@pytest.mark.parametrize(
    "case", [c for c in cases("aggregation") if "error" not in c["expected"]], ids=lambda c: c["id"]
)
def test_aggregation_cases(case):
    out = evalcrafter_scores(_parsed(case["input"]["final_average_log_values"]))
    expected = case["expected"]
    for name in _CATEGORIES:  # the same float expressions: exact
        assert _same(out[name], expected[name]), name
    for name, value in expected["metrics_reported"].items():
        assert _same(out["metrics_reported"][name], value), name
    assert out["log_lines"] == expected["log_lines"]


def test_aggregation_error_case_fails_like_the_official_parser():
    (case,) = [c for c in cases("aggregation") if "error" in c["expected"]]
    values = case["input"]["final_average_log_values"]
    with pytest.raises(ValueError) as info:
        _parsed(values)
    assert f"ValueError: {info.value}" == case["expected"]["error"]


def test_missing_metrics_stay_nan_and_unknown_names_raise():
    out = evalcrafter_scores({"action_score": 0.5, "motion_ac_score": 0.5, "flow_score": 3.0})
    assert math.isfinite(out["motion_quality"])
    assert math.isnan(out["visual_quality"]) and math.isnan(out["total"])
    assert set(out["metrics_reported"]) == set(OFFICIAL_METRICS)
    with pytest.raises(KeyError, match="unknown metrics"):
        evalcrafter_scores({"fvd": 1.0})
