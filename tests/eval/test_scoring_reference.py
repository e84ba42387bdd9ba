"""eval_crafter.scoring against every reference case made by the official scoring code.

Tolerances are those of tests/fixtures/evalcrafter/README.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from evalcrafter_cases import cases, npy, typed_masks

from eval_crafter import scoring
from eval_crafter.prompts import load_kinetics_labels


def _ids(section: str) -> list[str]:
    return [c["id"] for c in cases(section)]


def _nan_equal(actual: float, expected, rel: float = 0.0, abs_: float = 0.0) -> bool:
    expected = float(expected)
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == pytest.approx(expected, rel=rel, abs=abs_)


@pytest.mark.parametrize("case", cases("blip_bleu"), ids=_ids("blip_bleu"))
def test_blip_bleu(case):
    captions, prompt = case["input"]["captions"], case["input"]["prompt"]
    expected = case["expected"]
    assert scoring.blip_bleu(captions, prompt) == pytest.approx(expected["blip_bleu"], abs=1e-12)
    per_caption = [scoring.bleu_scores(c.strip(), prompt, 4) for c in captions]
    for n in range(1, 5):  # compute_max(Bleu(n)) = max over captions of max(BLEU-1..n)
        m_n = max(max(s[:n]) for s in per_caption)
        assert m_n == pytest.approx(expected["compute_max"][f"bleu{n}"], abs=1e-12)


@pytest.mark.parametrize("case", cases("color"), ids=_ids("color"))
def test_color(case):
    inp, expected = case["input"], case["expected"]
    frames, masks = npy(inp["frames_rgb_npy_b64"]), typed_masks(inp)
    value = scoring.color_score(frames, masks, inp["gt_color"])
    assert value == pytest.approx(expected["color_score"], abs=1e-12)
    hues = [scoring.frame_avg_hue(f, m) for f, m in zip(frames, masks)]
    for got, want in zip(hues, expected["per_frame_avg_hue"], strict=True):
        assert _nan_equal(got, want, rel=1e-12)
    assert [scoring.hue_to_color(h) for h in hues] == expected["per_frame_color"]


@pytest.mark.parametrize("case", cases("count"), ids=_ids("count"))
def test_count(case):
    inp, expected = case["input"], case["expected"]
    masks = typed_masks(inp)
    assert scoring.count_per_frame(masks) == expected["det_count_frames"]
    assert scoring.count_score(masks, inp["gt_count"]) == pytest.approx(expected["count_score"], abs=1e-12)


@pytest.mark.parametrize("case", cases("amplitude"), ids=_ids("amplitude"))
def test_amplitude(case):
    inp, expected = case["input"], case["expected"]
    flows = npy(inp["flows_npy_b64"])
    assert scoring.pair_flow_means(flows) == pytest.approx(expected["per_pair_mean"], rel=1e-6)
    flow, pred, hit = scoring.motion_ac_score(flows, inp["amp"])
    assert _nan_equal(flow, expected["flow_score"], rel=1e-6)
    assert (pred, hit) == (expected["amp_pred"], expected["motion_ac_score"])


def test_sintel_padding_matches_reference():
    for case in cases("amplitude"):
        h, w = case["input"]["frame_hw"]
        assert list(scoring.sintel_padding(h, w)) == case["input"]["pad_left_right_top_bottom"]


@pytest.mark.parametrize("case", cases("inception_score"), ids=_ids("inception_score"))
def test_inception_score(case):
    inp, expected = case["input"], case["expected"]
    probs = [npy(b) for b in inp["probs_npy_b64"]]
    assert [len(p) for p in probs] == inp["frames_per_video"]
    splits = scoring.inception_split_scores(np.concatenate(probs), inp["splits"])
    for got, want in zip(splits.tolist(), expected["split_scores"], strict=True):
        assert _nan_equal(got, want, rel=1e-5)
    mean, std = scoring.inception_score(probs, inp["splits"])
    assert _nan_equal(mean, expected["is_mean"], rel=1e-5)
    assert _nan_equal(std, expected["is_std"], rel=1e-4, abs_=1e-6)


@pytest.mark.parametrize("case", cases("action"), ids=_ids("action"))
def test_action(case):
    inp, expected = case["input"], case["expected"]
    scores = npy(inp["pred_scores_npy_b64"])
    labels = list(load_kinetics_labels())
    top = scoring.top5(scores)
    assert [i for i, _ in top] == [i for i, _ in inp["top5"]]
    assert [p for _, p in top] == pytest.approx([p for _, p in inp["top5"]], abs=0)
    assert [labels[i] for i, _ in top] == inp["top5_labels"]
    features = inp["text_features"]
    seen = []

    def encode_text(texts):
        seen.extend(texts)
        return np.array([features[t] for t in texts], dtype=np.float32)

    value = scoring.action_score(scores, labels, inp["gt_action"], encode_text)
    assert value == pytest.approx(expected["action_score"], abs=1e-6)
    assert seen == [*inp["top5_labels"], inp["gt_action"]]


def test_every_section_has_cases():
    counts = {
        s: len(cases(s))
        for s in ("blip_bleu", "color", "count", "amplitude", "inception_score", "action", "aggregation")
    }
    assert counts == {
        "blip_bleu": 32,
        "color": 22,
        "count": 16,
        "amplitude": 17,
        "inception_score": 7,
        "action": 12,
        "aggregation": 4,
    }


def test_bad_inputs_raise():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="2 frames but 1 masks"):
        scoring.color_score(frames, [np.zeros((4, 4), np.uint8)], "red")
    with pytest.raises(ValueError, match="at least one frame"):
        scoring.count_score([], "2")
    with pytest.raises(ValueError, match="at least one video"):
        scoring.inception_score([])
