"""The fixed-mode twins: each corrects one official quirk, shown on a case where they differ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evalcrafter_cases import cases, npy, typed_masks

from eval_crafter import scoring


def _solid(rgb, n=3, size=(8, 8)):
    return np.tile(np.array(rgb, np.uint8), (n, *size, 1))


def test_blip_bleu_fixed_is_the_real_bleu_average():
    captions, prompt = ["a b a", "", "x", "c", "q"], "b a b"  # reference case bleu_a13
    per = [scoring.bleu_scores(c, prompt) for c in captions]
    expected = sum(max(p[n] for p in per) for n in range(4)) / 4
    assert scoring.blip_bleu_fixed(captions, prompt) == pytest.approx(expected, abs=1e-15)
    assert scoring.blip_bleu_fixed(captions, prompt) < scoring.blip_bleu(captions, prompt)
    exact = "2 Dog and a whale, ocean adventure"
    assert scoring.blip_bleu_fixed([exact] * 5, exact) == pytest.approx(1.0, abs=1e-8)


def test_color_fixed_keeps_red_and_drops_empty_frames():
    red = _solid((255, 0, 0))  # hue 0: the official product is 0 -> NaN -> "red" by accident
    full = [np.ones((8, 8), np.uint8)] * 3
    empty = [np.zeros((8, 8), np.uint8)] * 3
    assert scoring.circular_mean_hue(red[0], full[0]) == pytest.approx(0.0, abs=1e-9)
    assert scoring.color_score_fixed(red, full, "red") == 1.0
    assert scoring.color_score(red, empty, "red") == 1.0  # official: empty masks count as red
    assert scoring.color_score_fixed(red, empty, "red") == 0.0
    assert math.isnan(scoring.circular_mean_hue(red[0], empty[0]))


def test_color_fixed_no_uint8_wrap_on_object_ids():
    case = next(c for c in cases("color") if c["id"] == "color_a02")  # blue, id 3: 339 wraps to 83
    frames, masks = npy(case["input"]["frames_rgb_npy_b64"]), typed_masks(case["input"])
    assert scoring.color_score(frames, masks, "blue") == 1.0
    case = next(c for c in cases("color") if c["id"] == "color_a01")  # blue, id 2: 226 -> red
    frames, masks = npy(case["input"]["frames_rgb_npy_b64"]), typed_masks(case["input"])
    assert scoring.color_score(frames, masks, "blue") == 0.0
    assert scoring.color_score_fixed(frames, masks, "blue") == 1.0


def test_circular_hue_mean_across_zero():
    frame = np.zeros((1, 2, 3), np.uint8)
    frame[0, 0] = (255, 0, 12)  # hue 178 (magenta-red)
    frame[0, 1] = (255, 12, 0)  # hue 1 or 2 (red-orange)
    hue = scoring.circular_mean_hue(frame, np.ones((1, 2), np.uint8))
    assert min(hue, 180 - hue) < 2 and scoring.hue_to_color(hue) == "red"


def test_motion_fixed_crops_padding_and_scales_threshold():
    flows = np.zeros((2, 2, 24, 32), np.float32)  # 20x30 frame padded by (1, 1, 2, 2)
    flows[:, 0, 2:22, 1:31] = 3.0
    flows[:, 1, 2:22, 1:31] = 4.0  # |v| = 5 inside the frame, 0 on the padded border
    flow, pred, hit = scoring.motion_ac_score_fixed(flows, "large", (20, 30))
    assert flow == pytest.approx(5.0)
    threshold = 5.0 * math.hypot(20, 30) / math.hypot(320, 512)
    assert threshold < 5.0 and (pred, hit) == ("large", 1)
    official = scoring.motion_ac_score(flows, "large")
    assert official[0] < 5.0 and official[1:] == ("slow", 0)
    with pytest.raises(ValueError, match="at least two frames"):
        scoring.motion_ac_score_fixed(np.zeros((0, 2, 8, 8), np.float32), "slow", (8, 8))


def test_inception_fixed_is_order_free_and_refuses_few_frames():
    case = next(c for c in cases("inception_score") if c["id"] == "is_a02")  # reversed order
    probs = [npy(b) for b in case["input"]["probs_npy_b64"]]
    by_id = dict(zip(case["input"]["video_order"], probs))
    reversed_ids = dict(reversed(list(by_id.items())))
    assert scoring.inception_score_fixed(by_id) == scoring.inception_score_fixed(reversed_ids)
    sorted_mean, _ = scoring.inception_score([by_id[k] for k in sorted(by_id)])
    assert scoring.inception_score_fixed(by_id)[0] == sorted_mean
    with pytest.raises(ValueError, match="at least 10 frames"):
        scoring.inception_score_fixed({"a": probs[0][:4]})
