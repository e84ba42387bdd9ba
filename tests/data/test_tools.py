"""Dataset tools: synthetic shapes (+ ground truth read back from pixels), subset, probe, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from data_tools.probe import probe_dataset
from data_tools.subset import SubsetError, allocate, make_subset
from data_tools.synth import SceneSpec, estimate_attributes, make_synthetic_dataset, render_scene, scene_masks
from tsm_video.cli import main
from tsm_video.data import OPENVID_COLUMNS, read_frames, read_index


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(out, num_videos=12, seed=4, size=(64, 64), num_frames=16, fps=8)


def test_caption_names_the_scene():
    assert (
        SceneSpec("red", "circle", 3, "fast", "left").caption == "three red circles moving fast to the left"
    )
    assert SceneSpec("blue", "square", 1, "slow", "up").caption == "one blue square moving slow up"


def test_render_moves_as_specified():
    spec = SceneSpec("green", "triangle", 2, "fast", "right")
    frames, centres = render_scene(spec, (48, 80), 10, np.random.default_rng(0))
    assert frames.shape == (10, 48, 80, 3) and centres.shape == (10, 2, 2)
    travel = centres[-1, :, 0] - centres[0, :, 0]
    np.testing.assert_allclose(travel, 0.6 * 80)  # fast = 60 % of the width over the clip
    np.testing.assert_allclose(centres[:, :, 1], centres[:1, :, 1].repeat(10, 0))  # lanes stay put


def test_masks_cover_exactly_the_drawn_shapes():
    spec = SceneSpec("red", "square", 3, "slow", "down")
    frames, centres = render_scene(spec, (64, 48), 6, np.random.default_rng(1))
    masks = scene_masks(spec, centres, (64, 48))
    assert masks.shape == (6, 3, 64, 48)
    drawn = (frames != 20).any(-1)  # anything but the background
    np.testing.assert_array_equal(masks.any(1), drawn)
    assert not (masks.sum(1) > 1).any()  # lanes keep the shapes apart


def test_synthetic_dataset_format_and_ground_truth(synth):
    with synth.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == OPENVID_COLUMNS and len(rows) == 12
    truth = json.loads((synth.parent / "ground_truth.json").read_text())
    for row in rows:
        gt = truth[row["video"]]
        assert row["caption"] == gt["caption"]
        frames, fps = read_frames(synth.parent / "videos" / row["video"])
        assert frames.shape == (16, 64, 64, 3) and fps == 8.0
        assert np.asarray(gt["centres"]).shape == (16, gt["count"], 2)
        # the pixels carry the caption: attributes read back from the decoded h264 video
        assert estimate_attributes(frames) == {k: gt[k] for k in ("color", "count", "direction", "speed")}


def test_synthetic_dataset_is_seeded(synth, tmp_path):
    again = make_synthetic_dataset(tmp_path, num_videos=12, seed=4, size=(64, 64), num_frames=16, fps=8)
    assert again.read_text() == synth.read_text()


def test_allocate_is_proportional():
    assert allocate([50, 30, 20], 10) == [5, 3, 2]
    assert allocate([5, 5, 1], 5) == [2, 2, 1]  # quotas 2.27, 2.27, 0.45: the spare draw goes to 0.45
    assert allocate([3, 1], 10) == [3, 1]
    assert sum(allocate([7, 11, 13], 17)) == 17


def _csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OPENVID_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_subset_thresholds_seed_and_strata(tmp_path):
    rows = [
        {
            "video": f"v{i}.mp4",
            "caption": f"c{i}",
            "aesthetic score": 4 + (i % 3),
            "motion score": i,
            "temporal consistency score": 0.9,
            "camera motion": ["static", "pan_left"][i % 2],
            "frame": 100,
            "fps": 30,
            "seconds": 2 + i % 10,
        }
        for i in range(300)
    ]
    rows[5]["aesthetic score"] = "n/a"
    _csv(tmp_path / "all.csv", rows)
    report = make_subset(
        tmp_path / "all.csv",
        tmp_path / "a.csv",
        n=40,
        seed=1,
        minimum={"aesthetic score": 5},
        maximum={"seconds": 9},
        stratify="camera motion",
    )
    assert report.dropped == {
        "missing:aesthetic score": 1,
        "threshold:aesthetic score": 100,
        "threshold:seconds": 40,
    }
    assert report.eligible == 159 and report.written == 40
    with (tmp_path / "a.csv").open() as f:
        out = list(csv.DictReader(f))
    assert list(out[0]) == OPENVID_COLUMNS
    assert all(float(r["aesthetic score"]) >= 5 and float(r["seconds"]) <= 9 for r in out)
    assert sorted(int(r["video"][1:-4]) for r in out) == [int(r["video"][1:-4]) for r in out]  # input order
    strata = [r["camera motion"] for r in out]
    assert strata.count("static") == strata.count("pan_left") == 20
    make_subset(
        tmp_path / "all.csv",
        tmp_path / "b.csv",
        n=40,
        seed=1,
        minimum={"aesthetic score": 5},
        maximum={"seconds": 9},
        stratify="camera motion",
    )
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    make_subset(tmp_path / "all.csv", tmp_path / "c.csv", n=40, seed=2)
    assert (tmp_path / "c.csv").read_text() != (tmp_path / "a.csv").read_text()
    with pytest.raises(
        SubsetError, match=r"no column 'width' \(width/height come from `tsm-video data probe"
    ):
        make_subset(tmp_path / "all.csv", tmp_path / "d.csv", minimum={"width": 512})
    assert not (tmp_path / "d.csv").exists()


def test_probe_counts_bad_files_by_reason(video_dir, tmp_path):
    index = read_index(video_dir / "index.csv", video_dir)
    summary = probe_dataset(index, tmp_path, annotate=(video_dir / "index.csv", tmp_path / "annotated.csv"))
    assert summary["videos"] == 14 and summary["decodable"] == 12  # good ×10, short, truncated
    assert summary["bad_by_reason"] == {"unreadable": 1, "missing": 1}
    assert summary["over_reported_frame_count"] == 1  # the truncated file
    assert summary["resolution"] == {"64x36": 12}
    assert (tmp_path / "probe.md").read_text().startswith("# Dataset probe")
    videos = {v["id"]: v for v in json.loads((tmp_path / "probe.json").read_text())["videos"]}
    assert videos["good_3.mp4"]["frames"] == 46 and videos["good_3.mp4"]["fps"] == 24.0
    with (tmp_path / "annotated.csv").open() as f:
        annotated = {r["video"]: r for r in csv.DictReader(f)}
    assert annotated["good_3.mp4"]["width"] == "64" and annotated["missing.mp4"]["probe status"] == "missing"


def test_cli_synth_subset_probe_cache(tmp_path, monkeypatch, capsys):
    assert (
        main(["data", "synth", "--out", str(tmp_path / "s"), "--num-videos", "4", "--num-frames", "12"]) == 0
    )
    csv_path = tmp_path / "s" / "synthetic.csv"
    assert (
        main(["data", "subset", "--csv", str(csv_path), "--out", str(tmp_path / "sub.csv"), "-n", "3"]) == 0
    )
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 4
    assert (
        main(
            [
                "data",
                "probe",
                "--csv",
                str(tmp_path / "sub.csv"),
                "--videos",
                str(tmp_path / "s" / "videos"),
                "--out",
                str(tmp_path / "probe"),
                "--deep-segments",
                "2",
                "--check-decord",
                "--annotate",
                str(tmp_path / "annotated.csv"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["summary"]["decodable"] == 3
    with (tmp_path / "annotated.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["probe status"] for r in rows} == {"ok"} and {r["rotation"] for r in rows} == {"0"}
    assert {r["decord exact"] for r in rows} <= {"yes", "no"}

    import tsm_video.models

    class Tiny(torch.nn.Module):
        def encode_pixels(self, pixels):
            return pixels[:, :1].repeat(1, 4, 1, 1, 1)[..., ::8, ::8]  # b 4 t h/8 w/8

        def encode_text(self, prompts):
            return torch.zeros(len(prompts), 5, 6)

    monkeypatch.setattr(tsm_video.models, "build_backbone", lambda name, ckpt, device: Tiny())
    assert (
        main(
            [
                "data",
                "cache",
                "--csv",
                str(csv_path),
                "--videos",
                str(tmp_path / "s" / "videos"),
                "--out",
                str(tmp_path / "cache"),
                "--num-frames",
                "4",
                "--height",
                "32",
                "--width",
                "32",
                "--num-workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "cache" / "index-r0.json").read_text())["rows"]
    assert len(rows) == 4


def test_cli_min_resolution_without_probe_columns_is_one_line(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path / "s"), "--num-videos", "2", "--num-frames", "4"])
    capsys.readouterr()
    argv = [
        "data",
        "subset",
        "--csv",
        str(tmp_path / "s" / "synthetic.csv"),
        "--out",
        str(tmp_path / "o.csv"),
    ]
    assert main([*argv, "--min-resolution", "512x320"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no column 'width'" in err and "probe --annotate" in err
    assert not (tmp_path / "o.csv").exists()
