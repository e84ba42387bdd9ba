"""Shared video IO: h264 round trips, decoder agreement, bad files, the frame-count guard."""

from __future__ import annotations

import numpy as np
import pytest

from tsm_video.data import video_io
from tsm_video.data.video_io import (
    VideoReadError,
    count_packets,
    decode_frames,
    have_decord,
    probe_video,
    read_frames,
    write_mp4,
)

needs_decord = pytest.mark.skipif(not have_decord(), reason="decord not installed")


@pytest.mark.parametrize(("fps", "size"), [(8.0, (32, 48)), (24.0, (33, 45)), (29.97, (35, 64))])
def test_round_trip_fps_and_odd_sizes(tmp_path, make_video, frame_ids, fps, size):
    path = make_video(tmp_path / "v.mp4", 30, size, fps)
    frames, read_fps = read_frames(path)
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)  # yuv420p pads odd sides by one
    assert frames.shape == (30, *even, 3) and frames.dtype == np.uint8
    assert read_fps == pytest.approx(fps, rel=1e-3)
    assert frame_ids(frames) == list(range(30))
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (30, even[1], even[0])


def test_write_is_atomic_and_validates(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="fps"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.uint8), 0)
    write_mp4(tmp_path / "sub" / "x.mp4", np.zeros((3, 8, 8, 3), np.uint8), 8)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.mp4"]  # no temporary left behind


@pytest.mark.parametrize("backend", ["av", pytest.param("decord", marks=needs_decord), "auto"])
def test_subset_indices_in_requested_order(tmp_path, make_video, frame_ids, backend):
    path = make_video(tmp_path / "v.mp4", 40, gop=8)
    frames, _ = read_frames(path, [33, 5, 5, 17, 39], backend=backend)
    assert frame_ids(frames) == [33, 5, 5, 17, 39]


@needs_decord
def test_decord_and_pyav_give_the_same_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 40, 64, 3), dtype=np.uint8)
    path = write_mp4(tmp_path / "noise.mp4", frames, 12, keyframe_interval=6)
    idx = [0, 7, 13, 19]
    a, _ = decode_frames(path, idx, backend="av")
    d, _ = decode_frames(path, idx, backend="decord")
    # both wrap FFmpeg's h264 decoder and the same yuv→rgb conversion: identical pixels
    assert np.abs(a.astype(int) - d.astype(int)).max() <= 1


def test_bytes_source(tmp_path, make_video, frame_ids):
    data = make_video(tmp_path / "v.mp4", 20).read_bytes()
    frames, fps = read_frames(data, [3, 19])
    assert frame_ids(frames) == [3, 19] and fps == 24.0


def test_bad_files_raise_with_reason(tmp_path, video_dir):
    with pytest.raises(VideoReadError) as err:
        read_frames(video_dir / "missing.mp4")
    assert err.value.reason == "missing"
    with pytest.raises(VideoReadError) as err:
        read_frames(video_dir / "corrupt.mp4", [0])
    assert err.value.reason == "unreadable"
    with pytest.raises(VideoReadError) as err:
        read_frames(video_dir / "short.mp4", [5])
    assert err.value.reason == "too_short"


def test_truncated_file_over_reports_and_is_guarded(video_dir, frame_ids, monkeypatch):
    path = video_dir / "truncated.mp4"
    assert probe_video(path).num_frames == 50  # the header still claims every frame
    present = count_packets(path)
    assert 0 < present < 50
    frames, _ = read_frames(path)  # every frame that decodes, none invented
    assert frame_ids(frames) == list(range(len(frames))) and len(frames) <= present
    requested = []
    real = video_io._decord_batch
    monkeypatch.setattr(video_io, "_decord_batch", lambda s, i: requested.append(i.max()) or real(s, i))
    for backend in ("av", "auto", "decord"):
        with pytest.raises(VideoReadError) as err:
            read_frames(path, [10, 49], backend=backend)
        assert err.value.reason == "too_short"
    assert requested == []  # decord was never asked for a frame past the packets present


def test_write_from_a_frame_iterator(tmp_path, frame_ids):
    frames = (np.full((20, 30, 3), 16 + 4 * i, np.uint8) for i in range(12))
    path = write_mp4(tmp_path / "gen.mp4", frames, 10, keyframe_interval=4, preset="veryfast")
    decoded, fps = read_frames(path)
    assert decoded.shape == (12, 20, 30, 3) and fps == 10 and frame_ids(decoded) == list(range(12))
    with pytest.raises(ValueError, match="empty"):
        write_mp4(tmp_path / "none.mp4", iter([]), 10)
    with pytest.raises(ValueError, match="in a 20x30 video"):
        write_mp4(
            tmp_path / "mixed.mp4", iter([frames_a := np.zeros((20, 30, 3), np.uint8), frames_a[:10]]), 10
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.mp4"]


@pytest.mark.parametrize("backend", ["av", pytest.param("decord", marks=needs_decord)])
def test_decoder_scaling_matches_resizing_after(tmp_path, backend):
    import cv2

    y, x = np.mgrid[0:72, 0:128]
    frames = np.repeat(((x + 2 * y) % 256).astype(np.uint8)[None, ..., None], 6, 0).repeat(
        3, -1
    )  # smooth ramp
    path = write_mp4(tmp_path / "ramp.mp4", frames, 10)
    full, _ = decode_frames(path, [1, 4], backend=backend)
    scaled, _ = decode_frames(path, [1, 4], backend=backend, cover=(36, 64))
    assert scaled.shape == (2, 36, 64, 3)
    after = np.stack([cv2.resize(f, (64, 36), interpolation=cv2.INTER_AREA) for f in full])
    assert np.abs(scaled.astype(int) - after.astype(int)).mean() < 3
