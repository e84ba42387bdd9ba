"""Generation plumbing without a model: prompt files, shards, clip seeds, media files, resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsm_video.data.video_io import read_frames
from tsm_video.generation.media import compare_grid, to_uint8_frames, write_frame_grid, write_gif
from tsm_video.generation.prompts import (
    PromptError,
    PromptItem,
    clip_seed,
    parse_shard,
    read_prompts,
    select_shard,
)
from tsm_video.generation.runner import (
    ManifestError,
    OutputOptions,
    check_manifest,
    recorded_run,
    run_prompts,
)
from tsm_video.generation.settings import GenerateSettings, SettingsError

FIXTURES = Path(__file__).parent / "fixtures" / "evalcrafter"


def test_evalcrafter_metadata_gives_700_ids_in_order():
    items = read_prompts(FIXTURES / "metadata.json")
    assert [it.id for it in items] == [f"{i:04d}" for i in range(700)]
    meta = json.loads((FIXTURES / "metadata.json").read_text())
    assert items[1].prompt == meta["0001"]["prompt"].strip() == "Teddy bear and 3 real bear"


def test_text_file_one_prompt_per_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n  a dog on a bike  \n")
    assert read_prompts(path) == [PromptItem("0000", "a cat"), PromptItem("0001", "a dog on a bike")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("\n \n", "no prompts"),
        ("{}", "no prompts"),
        ('{"0": {"attributes": {}}}', "no non-empty"),
        ("{not json", "does not parse"),
        ('{"../x": {"prompt": "a"}}', "cannot name a file"),
    ],
)
def test_bad_prompt_files(tmp_path, content, message):
    path = tmp_path / "p.txt"
    path.write_text(content)
    with pytest.raises(PromptError, match=message):
        read_prompts(path)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        read_prompts(tmp_path / "nope.txt")


@pytest.mark.parametrize("k", [1, 3, 4, 7, 701])
def test_shards_cover_every_id_exactly_once(k):
    items = read_prompts(FIXTURES / "metadata.json")
    ids = [it.id for i in range(k) for it in select_shard(items, *parse_shard(f"{i}/{k}"))]
    assert sorted(ids) == [it.id for it in items]
    sizes = [len(select_shard(items, i, k)) for i in range(k)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("spec", ["1", "2/2", "-1/3", "a/b", "0/0", "1/2/3"])
def test_bad_shard_specs(spec):
    with pytest.raises(PromptError, match="shard"):
        parse_shard(spec)


def test_clip_seed_is_stable_and_separates_inputs():
    assert clip_seed(123, "a cat") == clip_seed(123, "a cat")
    # Pinned value: a change in the derivation would silently change every clip ever made.
    assert clip_seed(123, "a cat") == int.from_bytes(hashlib.sha256(b"123\0a cat").digest()[:8], "little") & (
        (1 << 63) - 1
    )
    seeds = {clip_seed(s, p) for s in (0, 1, 123) for p in ("a cat", "a dog", "a cat ")}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)


def test_settings_validation_names_the_flag():
    GenerateSettings().validate(64)
    with pytest.raises(SettingsError, match="--height 300: .*multiple of 64.*try 320"):
        GenerateSettings(height=300).validate(64)
    with pytest.raises(SettingsError, match="--width"):
        GenerateSettings(width=0).validate(8)
    with pytest.raises(SettingsError, match="--frames 0"):
        GenerateSettings(num_frames=0).validate(8)
    with pytest.raises(SettingsError, match="--steps 1001"):
        GenerateSettings(steps=1001).validate(8)
    with pytest.raises(SettingsError, match="--eta"):
        GenerateSettings(eta=-0.1).validate(8)


def test_uint8_frames_round_trip_values():
    clip = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 4, 1, 1).expand(3, 4, 2, 2)  # c f h w
    frames = to_uint8_frames(clip)
    assert frames.shape == (4, 2, 2, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 128, 255, 255]


def test_gif_png_and_compare_grid(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (5, 16, 24, 3), dtype=np.uint8)
    write_gif(tmp_path / "c.gif", clip, fps=10)
    gif = Image.open(tmp_path / "c.gif")
    assert gif.n_frames == 5 and gif.size == (24, 16) and gif.info["duration"] == 100
    write_frame_grid(tmp_path / "c.png", clip, columns=2)
    grid = np.asarray(Image.open(tmp_path / "c.png"))
    assert grid.shape == (3 * 16, 2 * 24, 3)
    np.testing.assert_array_equal(grid[16:32, 24:48], clip[3])
    assert not grid[32:, 24:].any()  # the sixth cell is empty
    video = compare_grid([clip, clip // 2], ["base", "TSM"])
    strip = video.shape[1] - 16
    assert video.shape == (5, 16 + strip, 48, 3) and strip >= 12
    np.testing.assert_array_equal(video[:, strip:, 24:], clip // 2)
    assert video[0, :strip, :24].any() and video[0, :strip, 24:].any()  # both labels drawn
    assert not np.array_equal(video[0, :strip, :24], video[0, :strip, 24:])  # and they differ
    with pytest.raises(ValueError, match="one label per clip"):
        compare_grid([clip], ["a", "b"])


def _noise_clips(prompts, seeds):
    """A stand-in generator whose clip is a function of its seed alone: (B, 3, 2, 16, 16)."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return torch.stack([torch.rand(3, 2, 16, 16, generator=g) * 2 - 1 for g in gens])


def test_run_prompts_resumes_and_ignores_partial_files(tmp_path):
    items = [PromptItem(f"{i:04d}", f"prompt {i}") for i in range(5)]
    options = OutputOptions(save_fps=8, gif=True)
    first = run_prompts(
        _noise_clips, items[:2], tmp_path, seed=1, batch_size=2, options=options, progress=False
    )
    assert first.written == ["0000", "0001"]
    before = (tmp_path / "0000.mp4").stat().st_mtime_ns
    (tmp_path / ".0002.abc.mp4.tmp").write_bytes(b"half a file")  # what a killed write leaves
    calls = []

    def counting(prompts, seeds):
        calls.append(list(prompts))
        return _noise_clips(prompts, seeds)

    second = run_prompts(counting, items, tmp_path, seed=1, batch_size=2, options=options, progress=False)
    assert second.skipped == ["0000", "0001"] and second.written == ["0002", "0003", "0004"]
    assert calls == [["prompt 2", "prompt 3"], ["prompt 4"]]
    assert (tmp_path / "0000.mp4").stat().st_mtime_ns == before
    frames, fps = read_frames(tmp_path / "0004.mp4")
    assert frames.shape == (2, 16, 16, 3) and fps == 8
    assert sorted(p.name for p in tmp_path.glob("*.gif")) == [f"{i:04d}.gif" for i in range(5)]


def test_run_prompts_kill_mid_write_leaves_no_clip(tmp_path, monkeypatch):
    import tsm_video.generation.runner as runner

    items = [PromptItem("0000", "a"), PromptItem("0001", "b")]

    def dying_write(path, frames, fps):
        raise KeyboardInterrupt  # the process is stopped while encoding

    monkeypatch.setattr(runner, "write_mp4", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_prompts(
            _noise_clips,
            items,
            tmp_path,
            seed=0,
            batch_size=1,
            options=OutputOptions(save_fps=8, grid_png=True),
            progress=False,
        )
    assert not list(tmp_path.glob("*.mp4"))


def test_manifest_refuses_other_settings(tmp_path):
    assert check_manifest(tmp_path, {"seed": 1, "settings": {"steps": 50}})
    (tmp_path / "0000.mp4").write_bytes(b"clip")  # the folder now holds a clip of that run
    assert not check_manifest(tmp_path, {"seed": 1, "settings": {"steps": 50}})  # same run (another shard)
    with pytest.raises(ManifestError, match="settings"):
        check_manifest(tmp_path, {"seed": 1, "settings": {"steps": 25}})


def test_manifest_without_clips_binds_nothing(tmp_path):
    check_manifest(tmp_path, {"seed": 1})
    assert check_manifest(tmp_path, {"seed": 2})  # no clip was made under seed 1: replaced
    assert json.loads((tmp_path / "generate.json").read_text()) == {"seed": 2}


def test_failed_run_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError, match="no weights"), recorded_run(tmp_path / "out", {"seed": 1}):
        assert (tmp_path / "out" / "generate.json").is_file()
        raise RuntimeError("no weights")  # e.g. the base checkpoint fails to load
    assert not (tmp_path / "out" / "generate.json").exists()
    # A run that fails after its first clip keeps the manifest: it describes that clip.
    with pytest.raises(RuntimeError), recorded_run(tmp_path / "out", {"seed": 1}):
        (tmp_path / "out" / "0000.mp4").write_bytes(b"clip")
        raise RuntimeError("disk full")
    assert (tmp_path / "out" / "generate.json").is_file()


def test_progress_counts_denoising_steps(tmp_path, capsys):
    # One clip of 4 steps: the bar advances per step (4/4), not 0/1 for the whole clip.
    def stepping(prompts, seeds, on_step):
        for i, t in enumerate((751, 501, 251, 1)):
            on_step(i, t)
        return _noise_clips(prompts, seeds)

    items = [PromptItem("0000", "a prompt")]
    run_prompts(
        stepping, items, tmp_path, seed=0, batch_size=1, options=OutputOptions(save_fps=8), steps_per_call=4
    )
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert "4/4" in bar and "step" in bar and "clips 1/1" in bar, bar
