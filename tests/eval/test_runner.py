"""The evaluation runner and CLI: light backend end to end, resume from the cache, bad
inputs (unknown names, unreadable files, missing models), reports and comparison."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_models import raft_to_original_layout, write_video
from torchvision.models.optical_flow import raft_large

from data_tools.synth import make_synthetic_dataset
from eval_crafter import runner
from eval_crafter.metrics import ModelNotFoundError
from eval_crafter.metrics.amplitude import RAFT_FILE
from eval_crafter.prompts import load_metadata
from eval_crafter.report import load_report
from eval_crafter.runner import EvalSettings, UnknownVideoError, evaluate, list_videos
from eval_crafter.synthetic import synthetic_metadata
from tsm_video.cli import main
from tsm_video.data.av_reader import VideoReadError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Four synthetic clips renamed by prompt id, and their metadata file."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root / "raw", num_videos=4, seed=3, size=(64, 64), num_frames=16)
    meta = synthetic_metadata(json.loads((root / "raw" / "ground_truth.json").read_text()))
    (root / "videos").mkdir()
    for key, entry in meta.items():
        shutil.copy(root / "raw" / "videos" / entry["video"], root / "videos" / f"{key}.mp4")
    (root / "metadata.json").write_text(json.dumps(meta))
    return root, meta


def _light_args(videos, prompts, out, *extra):
    return [
        "eval",
        "evalcrafter",
        "--videos",
        str(videos),
        "--backend",
        "light",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_synthetic_metadata_format(synth, tmp_path, capsys):
    root, meta = synth
    out = tmp_path / "meta.json"
    assert (
        main(
            [
                "eval",
                "synth-metadata",
                "--ground-truth",
                str(root / "raw" / "ground_truth.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text()) == meta and load_metadata(out).keys() == meta.keys()
    assert "wrote 4 prompts" in capsys.readouterr().out
    entry = meta["0000"]
    assert set(entry) == {"prompt", "attributes", "video"}
    color, count, amp = (entry["attributes"][k] for k in ("color", "count", "amp"))
    assert color.split()[0] in entry["prompt"] and amp in ("large", "slow")
    assert count.split()[1] == color.split()[1]
    with pytest.raises(ValueError, match="lacks or has a bad"):
        synthetic_metadata({"x.mp4": {"color": "red"}})


def test_light_backend_end_to_end_and_resume(synth, tmp_path, monkeypatch, capsys):
    root, meta = synth
    out = tmp_path / "light.json"
    assert main(_light_args(root / "videos", root / "metadata.json", out, "--mode", "fixed")) == 0
    report = load_report(out)
    assert report["backend"] == "light" and report["mode"] == "fixed"
    assert "not EvalCrafter numbers" in report["label"] and report["evalcrafter"] is None
    assert out.with_suffix(".md").read_text().startswith("# light backend")
    assert (tmp_path / "light_hist.png").stat().st_size > 1000
    per_video = report["per_video"]
    assert sorted(per_video) == sorted(meta)
    keys = {"count": "count_score", "color": "color_score", "amplitude": "light_motion_ac_score"}
    for name, key in keys.items():
        values = [per_video[k][name][key] for k in per_video]
        assert report["metrics"][name]["value"] == pytest.approx(100 * np.mean(values))
    assert report["metrics"]["count"]["value"] == 100.0  # the segmenter finds every synthetic shape
    assert report["metrics"]["amplitude"]["value"] == 100.0  # travel separates slow from fast
    for k, entry in meta.items():
        assert per_video[k]["count"]["det_count_frames"] == [int(entry["attributes"]["count"].split()[0])] * 4

    # resume: every record comes from the cache, no video is decoded again
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a cached video")

    monkeypatch.setattr(runner, "VideoFrames", no_decode)
    assert main(_light_args(root / "videos", root / "metadata.json", out, "--mode", "fixed")) == 0
    again = load_report(out)
    assert again["cached"] == {"color": 4, "count": 4, "amplitude": 4}
    assert again["metrics"] == report["metrics"]
    capsys.readouterr()

    # compare: side by side with a compat run of the same videos
    monkeypatch.undo()
    compat = tmp_path / "compat.json"
    assert main(_light_args(root / "videos", root / "metadata.json", compat, "--metrics", "count")) == 0
    capsys.readouterr()
    md = tmp_path / "diff.md"
    assert main(["eval", "compare", str(out), str(compat), "--out", str(md)]) == 0
    text = capsys.readouterr().out
    assert text == md.read_text()
    assert "| count | 100.00 | 100.00 | 0.00 |" in text and "| color |" in text
    assert "differ in mode or backend" in text


def test_unknown_names_and_unreadable_videos(synth, tmp_path):
    root, _ = synth
    videos = tmp_path / "videos"
    shutil.copytree(root / "videos", videos)
    (videos / "clip.mp4").write_bytes((videos / "0000.mp4").read_bytes())
    (videos / "0001.mp4").write_bytes(b"not a video at all")
    (videos / "notes.txt").write_text("ignored: not a video extension")
    settings = dict(
        videos=videos,
        models=None,
        out=tmp_path / "r.json",
        metrics=("count",),
        backend="light",
        prompts=root / "metadata.json",
        progress=False,
    )
    with pytest.raises(UnknownVideoError, match=r"clip\.mp4.*--skip-unknown"):
        evaluate(EvalSettings(**settings))
    report = evaluate(EvalSettings(**settings, skip_unknown=True))
    assert report["skipped"] == {"unknown_name": 1, "unreadable": 1}
    assert list(report["failures"]["read"]) == ["0001"]
    assert sorted(report["per_video"]) == ["0000", "0002", "0003"]
    assert report["metrics"]["count"]["n"] == 3


def test_damage_in_the_frames_a_metric_reads_counts_the_video_unreadable(synth, tmp_path, monkeypatch):
    root, _ = synth

    class DamagedAfterOpening(runner.VideoFrames):  # 0002 opens, but its frames do not decode
        def __init__(self, source):
            super().__init__(source)
            self.damaged = Path(source).name == "0002.mp4"

        def __getitem__(self, key):
            if self.damaged:
                raise VideoReadError("corrupt", "decoder error at pts 5")
            return super().__getitem__(key)

    monkeypatch.setattr(runner, "VideoFrames", DamagedAfterOpening)
    report = evaluate(
        EvalSettings(
            videos=root / "videos",
            models=None,
            out=tmp_path / "r.json",
            metrics=("count", "color"),
            backend="light",
            prompts=root / "metadata.json",
            progress=False,
        )
    )
    assert report["skipped"] == {"unreadable": 1}
    assert report["failures"]["read"] == {"0002": "VideoReadError: corrupt: decoder error at pts 5"}
    assert "0002" not in report["per_video"] and len(report["per_video"]) == 3


def test_fixed_mode_visits_sorted_and_duplicates_are_rejected(tmp_path):
    meta = {"0000": {}, "0001": {}, "0002": {}}
    for name in ("0002.mp4", "0000.mp4", "0001.mp4"):
        (tmp_path / name).write_bytes(b"")
    paths, unknown = list_videos(tmp_path, meta, "fixed", skip_unknown=False)
    assert [p.name for p in paths] == ["0000.mp4", "0001.mp4", "0002.mp4"] and unknown == []
    (tmp_path / "0001.avi").write_bytes(b"")
    with pytest.raises(ValueError, match="share a prompt id"):
        list_videos(tmp_path, meta, "compat", skip_unknown=False)
    with pytest.raises(FileNotFoundError):
        list_videos(tmp_path / "absent", meta, "compat", skip_unknown=False)


def test_missing_models_fail_before_any_video(synth, tmp_path):
    root, _ = synth
    settings = EvalSettings(
        videos=root / "videos",
        models=tmp_path / "models",
        out=tmp_path / "r.json",
        metrics=("amplitude",),
        prompts=root / "metadata.json",
        progress=False,
    )
    with pytest.raises(ModelNotFoundError, match="raft-things.pth"):
        evaluate(settings)
    assert not (tmp_path / "r.cache").exists()
    with pytest.raises(KeyError, match="unknown light metric 'is'"):
        evaluate(
            EvalSettings(
                videos=root / "videos",
                models=None,
                out=tmp_path / "r.json",
                metrics=("is",),
                backend="light",
                prompts=root / "metadata.json",
                progress=False,
            )
        )
    with pytest.raises(ValueError, match="needs --models"):
        EvalSettings(videos=root / "videos", models=None, out=tmp_path / "r.json")


@pytest.mark.slow
def test_full_backend_amplitude_with_official_metadata(tmp_path):
    """Official prompt ids: motion_ac over the amp prompts, flow_score over all, the official
    aggregation fed with the measured values."""
    torch.manual_seed(0)
    models = tmp_path / "models"
    (models / RAFT_FILE).parent.mkdir(parents=True)
    torch.save(raft_to_original_layout(raft_large(weights=None).state_dict()), models / RAFT_FILE)
    meta = load_metadata()
    amp_ids = [k for k, e in meta.items() if "amp" in e["attributes"]][:1]
    plain_id = next(k for k, e in meta.items() if not e["attributes"])
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, key in enumerate([*amp_ids, plain_id]):
        write_video(videos / f"{key}.mp4", num_frames=2, size=(128, 128), seed=i)
    report = evaluate(
        EvalSettings(
            videos=videos, models=models, out=tmp_path / "r.json", metrics=("amplitude",), progress=False
        )
    )
    agg = report["metrics"]["amplitude"]
    assert (agg["n"], agg["n_flow"]) == (1, 2)
    hits = [report["per_video"][k]["amplitude"]["motion_ac_score"] for k in amp_ids]
    assert agg["value"] == pytest.approx(100 * np.mean(hits))
    reported = report["evalcrafter"]["metrics_reported"]
    assert reported["motion_ac_score"] == round(agg["official"]["motion_ac_score"] * 100, 2)
    assert math.isnan(reported["IS"])
    assert math.isnan(report["evalcrafter"]["motion_quality"])  # no action score measured
    assert report["label"] == "EvalCrafter (compat)"


def test_record_cache_round_trip_and_invalidation(tmp_path):
    from eval_crafter.cache import RecordCache, from_jsonable, to_jsonable

    video = tmp_path / "0000.mp4"
    video.write_bytes(b"frames")
    meta = {"prompt": "a red car", "attributes": {"color": "red car"}}
    cache = RecordCache(tmp_path / "cache")
    record = {"probs": np.arange(6, dtype=np.float32).reshape(2, 3), "flow_score": float("nan"), "n": 2}
    cache.save("0000", video, meta, record)
    loaded = cache.load("0000", video, meta)
    np.testing.assert_array_equal(loaded["probs"], record["probs"])
    assert math.isnan(loaded["flow_score"]) and loaded["n"] == 2
    assert cache.load("0000", video, {**meta, "prompt": "a blue car"}) is None  # other prompt entry
    video.write_bytes(b"other frames")
    assert cache.load("0000", video, meta) is None  # other file
    assert cache.load("0001", video, meta) is None
    assert from_jsonable(to_jsonable({"a": [float("nan"), float("inf"), 1.5, "x"]})) == {
        "a": [pytest.approx(float("nan"), nan_ok=True), float("inf"), 1.5, "x"]
    }
