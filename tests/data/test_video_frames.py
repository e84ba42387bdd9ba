"""VideoFrames: a lazy frame array that decodes exactly what is indexed, chunk walks decode once."""

from __future__ import annotations

import numpy as np
import pytest

from tsm_video.data.av_reader import AVReader, VideoReadError
from tsm_video.data.video_frames import VideoFrames

NAMES = ["h264_opengop_bpyramid.mp4", "mpeg4_bframes.avi", "h264_vfr.mp4", "h264_rotated.mp4"]


@pytest.mark.parametrize("name", NAMES)
def test_indexing_returns_the_named_frames(corpus, name):
    video = corpus[name]
    n = video.num_frames
    with VideoFrames(video.path) as frames:
        assert frames.shape == (n, *video.display_hw, 3) and len(frames) == n
        assert frames.ndim == 4 and frames.dtype == np.uint8
        assert video.ids(frames[[50, 3, 3, 17]]) == [50, 3, 3, 17]
        clips = frames[np.array([[4, 8], [n - 1, 0]])]  # 2-D index arrays keep their shape
        assert clips.shape == (2, 2, *video.display_hw, 3)
        assert video.ids(clips.reshape(-1, *clips.shape[2:])) == [4, 8, n - 1, 0]
        assert video.ids(frames[::10]) == list(range(0, n, 10))
        assert video.ids(frames[-1][None]) == [n - 1]
        assert video.ids(frames[:-1]) == list(range(n - 1))
        with pytest.raises(IndexError):
            frames[n]
        with pytest.raises(IndexError):
            frames[[0, n]]


def test_chunk_walks_decode_every_frame_once(corpus, monkeypatch):
    video = corpus["h264_opengop_bpyramid.mp4"]  # 72 frames, keyframe every 24
    converted = []
    original = AVReader._to_rgb

    def counting(self, frame, cover):
        converted.append(frame.pts)
        return original(self, frame, cover)

    monkeypatch.setattr(AVReader, "_to_rgb", counting)
    with VideoFrames(video.path) as frames:
        converted.clear()  # the first frame, decoded once to learn the displayed size
        ids = []
        for start in range(0, len(frames), 8):  # IS's walk: disjoint chunks
            ids += video.ids(frames[start : start + 8])
        assert ids == list(range(len(frames))) and len(converted) == len(frames)
        converted.clear()
        pairs = []
        for start in range(0, len(frames) - 1, 8):  # the flow walk: chunks overlap by one frame
            chunk = frames[start : min(start + 8, len(frames) - 1) + 1]
            pairs += list(zip(video.ids(chunk[:-1]), video.ids(chunk[1:])))
        assert pairs == [(i, i + 1) for i in range(len(frames) - 1)] and len(converted) == len(frames)
        converted.clear()
        assert video.ids(np.stack(list(frames))) == list(range(len(frames)))  # iteration
        assert len(converted) == len(frames)


def test_damaged_frames_raise_when_asked_for(corpus):
    video = corpus["h264_damaged.mp4"]
    with VideoFrames(video.path) as frames:
        assert video.ids(frames[:16]) == list(range(16))  # before the damage: exact
        with pytest.raises(VideoReadError) as err:
            for start in range(0, len(frames), 8):
                frames[start : start + 8]
        assert err.value.reason in ("corrupt", "too_short")
