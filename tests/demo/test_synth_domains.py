"""data_tools.synth domain B (post-pretraining variety) and the domain-A contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.synth import COLORS, DOMAINS, SceneSpec, make_synthetic_dataset, render_scene, sample_spec


def test_domain_a_draws_what_it_always_drew():
    """Domain A reproduces the generator as it was before domain B existed: the scenes, the RNG
    state after them and the pixels below were recorded with that earlier version."""
    rng = np.random.default_rng(7)
    specs = [sample_spec(rng, 3) for _ in range(3)]
    assert specs == [
        SceneSpec("purple", "square", 3, "fast", "up"),
        SceneSpec("white", "triangle", 1, "slow", "right"),
        SceneSpec("green", "triangle", 3, "slow", "right"),
    ]
    assert rng.random() == 0.7970694287520462
    assert specs[1].caption == "one white triangle moving slow to the right"
    frames, centres = render_scene(
        sample_spec(np.random.default_rng(1)), (32, 32), 4, np.random.default_rng(2)
    )
    assert int(frames.astype(np.int64).sum()) == 337260
    assert centres[0].round(3).tolist() == [[28.375, 7.237], [24.919, 15.355], [24.046, 25.006]]


def test_domain_b_is_more_varied():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, 4, "b") for _ in range(300)]
    assert {s.color for s in specs} - set(COLORS)  # colours beyond domain A's
    assert max(s.count for s in specs) == 4
    assert {s.texture for s in specs} == {"solid", "striped"}
    assert {s.camera for s in specs} == set(DOMAINS["b"].cameras)
    assert len({round(s.travel, 3) for s in specs}) > 100 and len({s.background for s in specs}) > 10
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        sample_spec(rng, 3, "c")


def test_camera_pan_moves_the_background_and_stripes_have_two_tones():
    spec = SceneSpec("red", "square", 1, "slow", "up", size=2.0, texture="striped", camera="pan left",
                     background=30, texture_amplitude=12)  # fmt: skip
    frames, centres = render_scene(spec, (48, 48), 16, np.random.default_rng(0))
    x, y = centres[0, 0].round().astype(int)
    # the camera pans left: background content moves right by w/2 over the clip (24 px)
    row = frames[:, 2, :, 0].astype(float)  # top row, away from the shape
    shift = int(np.argmin([np.abs(row[-1, s:] - row[0, : 48 - s]).mean() for s in range(30)]))
    assert 20 <= shift <= 28
    tones = {tuple(p) for p in frames[0, y - 3 : y + 4, x - 1 : x + 2].reshape(-1, 3)}
    assert (230, 40, 40) in tones and (126, 22, 22) in tones  # colour and its 0.55 shade


def test_domain_b_dataset_captions_and_ground_truth(tmp_path):
    csv = make_synthetic_dataset(tmp_path, num_videos=6, seed=3, size=(32, 32), num_frames=4, domain="b")
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == len(truth) == 6
    for scene in truth.values():
        assert scene["color"] in scene["caption"] and scene["shape"] in scene["caption"]
        if scene["camera"] != "static":
            assert f"camera pans {scene['camera'].split()[1]}" in scene["caption"]


def test_cli_synth_domain_flag_writes_that_domain(tmp_path):
    """`tsm-video data synth --domain b` writes domain B's scenes; the CLI's choices are DOMAINS."""
    from tsm_video.cli import main
    from tsm_video.cli.data import SYNTH_DOMAINS

    assert set(SYNTH_DOMAINS) == set(DOMAINS)
    args = ["--num-videos", "6", "--height", "32", "--width", "32", "--num-frames", "4", "--seed", "3"]
    assert main(["data", "synth", "--out", str(tmp_path / "b"), "--domain", "b", *args]) == 0
    cli_gt = json.loads((tmp_path / "b" / "ground_truth.json").read_text())
    make_synthetic_dataset(tmp_path / "ref", 6, 3, (32, 32), 4, domain="b")
    assert cli_gt == json.loads((tmp_path / "ref" / "ground_truth.json").read_text())
    assert any(entry["camera"] != "static" for entry in cli_gt.values())  # domain A never pans
