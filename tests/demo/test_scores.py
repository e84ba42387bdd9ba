"""Light scores of clips against the synthetic ground truth (tsm_video.demo.scores)."""

from __future__ import annotations

import math

import numpy as np

from data_tools.synth import SceneSpec, render_scene
from tsm_video.demo.scores import light_scores, motion_direction


def _scene(color="red", count=2, direction="right", speed="fast"):
    spec = SceneSpec(color, "square", count, speed, direction)
    frames, _ = render_scene(spec, (48, 48), 11, np.random.default_rng(0))
    truth = {"color": color, "shape": "square", "count": count, "speed": speed, "direction": direction}
    return frames, truth


def test_ground_truth_clips_score_full_marks_and_reversed_motion_fails():
    clips, truths = zip(*[_scene("red", 2, "right"), _scene("green", 3, "up"), _scene("blue", 1, "left")])
    scores = light_scores(list(clips), list(truths))
    assert {k: v["value"] for k, v in scores.items()} == {
        "color": 100.0,
        "count": 100.0,
        "direction": 100.0,
        "amplitude": 100.0,
    }
    reversed_ = light_scores([c[::-1] for c in clips], list(truths))
    assert reversed_["direction"]["value"] == 0.0 and reversed_["color"]["value"] == 100.0


def test_colours_the_hue_rule_cannot_name_are_not_scored():
    frames, truth = _scene("purple", 1, "down")
    scores = light_scores([frames], [truth])
    assert scores["color"]["n"] == 0 and math.isnan(scores["color"]["value"])
    assert scores["direction"]["value"] == 100.0 and scores["count"]["n"] == 1


def test_blank_clip_has_no_direction():
    assert motion_direction(np.full((4, 32, 32, 3), 20, np.uint8)) is None
