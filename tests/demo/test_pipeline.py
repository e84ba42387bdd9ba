"""The video demo end to end (`tsm-video demo`), at a few steps: every stage of the real code path
runs, the report has its tables, the pictures and clips exist, and nothing lands outside --out."""

from __future__ import annotations

import re

import cv2

from tsm_video.demo import pipeline
from tsm_video.demo.outdir import MARKER

LABELS = ("base", "vanilla_lora", "tsm_stage_1", "tsm_stage_2", "compare")
FEW_STEPS = [
    "train.steps.foster=1",
    "train.steps.assemble=1",
    "train.log_every=1",
    "generate.steps=2",
]


def test_demo_runs_every_stage_and_writes_only_into_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "NUM_TRAIN_VIDEOS", 8)  # two batches of 4 per epoch
    monkeypatch.setattr(pipeline, "NUM_HELDOUT_VIDEOS", 8)
    monkeypatch.setattr(pipeline, "NUM_SCORED", 5)  # the fewest a perfect score beats 50 % by 2 sd
    monkeypatch.chdir(tmp_path)  # relative paths in the config would land here
    out = tmp_path / "nested" / "demo"

    report = pipeline.run_demo(out, overrides=FEW_STEPS)

    outside = [p for p in tmp_path.rglob("*") if p != out.parent and out not in (p, *p.parents)]
    assert outside == [], outside
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *pipeline.ENTRIES])
    assert report == out / "report.md"
    text = report.read_text()
    for model in ("base", "vanilla LoRA (s1)", "TSM stage 1 (s4)", "TSM stage 2"):
        # one row each in the held-out loss table (4 intervals + mean), the score table and the
        # summary (mean loss beside the four scores)
        row = rf"^\| {re.escape(model)} \|"
        assert len(re.findall(row + r"( \d\.\d{4} \|){5}$", text, re.M)) == 1, model
        assert len(re.findall(row + r"( (–|\d+ \(n=\d\)) \|){4}$", text, re.M)) == 1, model
        assert len(re.findall(row + r" \d\.\d{4} \|( (–|\d+) \|){4}$", text, re.M)) == 1, model
    assert re.search(
        r"^- Drawing the prompted motion .*over 5 prompts, i\.e\. > \d+ %; .*\): .*held-out videos",
        text,
        re.M,
    )
    assert re.search(r"\*\*At demo scale TSM is (better|not better) than vanilla LoRA\*\*", text)
    # the held-out videos themselves score 100 % on colour and direction (the scorer reads pixels)
    ceiling = re.search(
        r"^\| held-out videos \(ceiling\) \| (\d+) \(n=\d\) \| .*? \| (\d+) \(n=5\)", text, re.M
    )
    assert ceiling and ceiling.groups() == ("100", "100")
    # post-pretraining only: the base is the shipped one (no base stage), the stages are timed
    assert "train base" not in text
    assert re.search(r"^\| train foster_s1 \(1 steps\) \| [0-9.]+ \|$", text, re.M)
    assert re.search(r"^\| total \| [0-9.]+ \|$", text, re.M)
    clips = sorted(p.name for p in (out / "clips").iterdir())
    assert clips == sorted(f"{i:02d}_{label}.mp4" for i in range(3) for label in LABELS)
    grid = cv2.imread(str(out / "sample_frames.png"))
    # 3 prompts x (32 px x zoom 4) tall at least; 4 frames of 5 panels (held-out video + 4 models) wide
    assert grid.shape[0] >= 3 * 32 * pipeline.PNG_ZOOM
    assert grid.shape[1] >= 4 * 5 * 32 * pipeline.PNG_ZOOM


def test_verdict_counts_prompted_motion_only_above_the_axis_only_rate():
    """A model whose clips move along the prompted axis with a random sign scores 50 % on
    direction (the shipped base: 48 % over 64 clips); the verdict must not call that drawing the
    prompted motion, though it is above the 25 % of random directions. Over 16 prompts the bar is
    8 + 2 sqrt(16 / 4) = 12 hits (75 %)."""
    scores = {
        label: {name: {"value": 50.0, "n": 16} for name in pipeline.SCORE_NAMES}
        for label in ("base", "vanilla LoRA (s1)", "TSM stage 1 (s4)", "TSM stage 2")
    }
    scores["TSM stage 2"]["direction"]["value"] = 100 * 13 / 16  # 13 hits > 12
    scores["TSM stage 1 (s4)"]["direction"]["value"] = 100 * 12 / 16  # on the bar: not above it
    losses = {label: [0.03] * 4 for label in scores}
    first = pipeline._verdict(losses, scores)[0]
    assert "over 16 prompts, i.e. > 75 %" in first
    assert first.split("): ")[1].startswith("TSM stage 2. "), first
