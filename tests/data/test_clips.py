"""Clip sampling (stride, target fps, effective fps, starts) and the crop/resize transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsm_video.data.clips import ClipSampler, resize_center_crop, to_model_pixels
from tsm_video.data.dataset import load_clip


def test_stride_target_fps_and_effective_fps():
    assert ClipSampler(16, frame_stride=3).stride(30.0) == 3
    sampler = ClipSampler(16, target_fps=10)
    assert [sampler.stride(f) for f in (30.0, 24.0, 8.0, 60.0)] == [3, 2, 1, 6]
    indices, fps = sampler.sample(np.arange(200) / 24.0, rng=None)
    assert fps == pytest.approx(12.0, rel=1e-12) and np.all(np.diff(indices) == 2) and len(indices) == 16
    assert ClipSampler(4).sample(np.arange(10) / 25.0)[1] == pytest.approx(25.0, rel=1e-12)


def test_starts_train_random_validation_centred():
    sampler = ClipSampler(4, frame_stride=2)  # span 7
    assert sampler.span(30) == 7
    assert sampler.sample(np.arange(6) / 30.0) is None
    eleven = np.arange(11) / 30.0
    np.testing.assert_array_equal(sampler.sample(eleven)[0], [2, 4, 6, 8])  # centred: slack 4 → start 2
    starts = {int(sampler.sample(eleven, np.random.default_rng(s))[0][0]) for s in range(200)}
    assert starts == {0, 1, 2, 3, 4}  # every valid start, nothing past the end


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="not both"):
        ClipSampler(16, frame_stride=2, target_fps=8)
    with pytest.raises(ValueError):
        ClipSampler(0)
    with pytest.raises(ValueError):
        ClipSampler(16, frame_stride=0)


@pytest.mark.parametrize(
    ("src", "out"),
    [
        ((720, 1280), (320, 512)),
        ((1280, 720), (320, 512)),
        ((100, 120), (320, 512)),
        ((64, 64), (32, 48)),
        ((32, 48), (32, 48)),
    ],
)
def test_resize_center_crop_shapes(src, out):
    frames = np.zeros((3, *src, 3), np.uint8)
    assert resize_center_crop(frames, out).shape == (3, *out, 3)


def test_center_crop_keeps_the_centre():
    frames = np.zeros((1, 100, 300, 3), np.uint8)
    frames[:, :, :100] = 255  # left third white: a square crop of the centre has none of it
    out = resize_center_crop(frames, (50, 50))
    assert out.max() == 0
    frames[:, :, 140:160] = 255  # a centre stripe survives, scaled by 0.5
    out = resize_center_crop(frames, (50, 50))
    assert (out[0, :, :, 0].mean(0) > 128).sum() == 10


def test_model_pixels_layout_and_range():
    frames = np.zeros((4, 6, 8, 3), np.uint8)
    frames[..., 0] = 255
    frames[2] = 0
    pixels = to_model_pixels(frames)
    assert pixels.shape == (3, 4, 6, 8) and pixels.dtype == torch.float32
    assert pixels[0, 0].eq(1).all() and pixels[1, 0].eq(-1).all() and pixels[0, 2].eq(-1).all()


def test_load_clip_decodes_only_the_planned_frames(video_dir, frame_ids):
    sampler = ClipSampler(4, target_fps=8)  # 24 fps → stride 3, effective 8 fps
    frames, fps = load_clip(str(video_dir / "good_1.mp4"), sampler, None, rng=None)  # 42 frames
    assert fps == pytest.approx(8.0, rel=1e-12)  # from timestamps: float rounding only
    assert frame_ids(frames) == [16, 19, 22, 25]  # centred: span 10, slack 42 - 10 = 32 → start 16
