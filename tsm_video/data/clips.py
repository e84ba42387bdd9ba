"""Clip sampling (which frames, at which effective fps) and the pixel transform.

Only the frames a clip needs are decoded; the transform crops first (a view) and then resizes
the crop, so no full-resolution float copy of the clip ever exists.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from tsm_video.data.av_reader import VideoReadError

__all__ = [
    "SPACING_TOLERANCE",
    "ClipSampler",
    "resize_center_crop",
    "to_channels_first",
    "to_model_pixels",
    "uint8_to_model",
]

cv2.setNumThreads(1)  # one thread per loader worker; workers provide the parallelism


# How far the spacing of a clip's frames may stray from its typical gap (fraction of the gap).
# Constant-rate files stray by their timestamp rounding only: one tick of the time base, at most
# 1 ms (matroska/webm) against 16.7 ms gaps at 60 fps, 6 %. Anything beyond is a variable rate.
SPACING_TOLERANCE = 0.1


class ClipSampler:
    """Frame indices of a ``num_frames`` clip at a frame stride or a target fps, from frame timestamps.

    ``frame_stride`` fixes the step between sampled frames; ``target_fps`` steps by
    ``stride = max(1, round(rate / target_fps))`` frame gaps in time, ``rate`` being the video's
    typical rate (its median gap), choosing at each step the frame nearest to the previous one
    plus that time; neither means stride 1. A clip whose frames are not evenly spaced (within
    :data:`SPACING_TOLERANCE` of a gap) raises ``VideoReadError("irregular_fps")``: variable
    frame rate videos give the clips that are even, and never a clip with a wrong rate. The
    effective fps handed to the model comes from the chosen frames' timestamps.
    """

    def __init__(
        self, num_frames: int = 16, frame_stride: int | None = None, target_fps: float | None = None
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
        if frame_stride is not None and target_fps is not None:
            raise ValueError("give frame_stride or target_fps, not both")
        if frame_stride is not None and frame_stride < 1:
            raise ValueError(f"frame_stride must be ≥ 1, got {frame_stride}")
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {target_fps}")
        self.num_frames, self.frame_stride, self.target_fps = num_frames, frame_stride, target_fps

    def stride(self, video_fps: float) -> int:
        if self.frame_stride is not None:
            return self.frame_stride
        if self.target_fps is not None and video_fps > 0:
            return max(1, round(video_fps / self.target_fps))
        return 1

    def span(self, video_fps: float) -> int:
        """Frames covered from the first to the last sampled frame, inclusive."""
        return (self.num_frames - 1) * self.stride(video_fps) + 1

    def sample(self, times, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float] | None:
        """(indices (num_frames,), effective fps) of one clip, or None when the video is too short.

        ``times`` (N,) are the display times (s) of the video's frames, ascending. ``rng`` draws
        a uniform start (training); without it the clip is centred (validation). Raises
        VideoReadError("irregular_fps") for unevenly spaced frames.
        """
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        gaps = np.diff(times)
        gap = float(np.median(gaps)) if len(gaps) else 0.0
        # the rate to 6 decimals: timestamps are rationals, and a tie (30 fps / 12) must stay a tie
        stride = self.stride(round(1.0 / gap, 6) if gap > 0 else 0.0)
        span = (self.num_frames - 1) * stride + 1
        if len(times) < span:
            return None
        if self.target_fps is None:
            slack = len(times) - span
            start = int(rng.integers(slack + 1)) if rng is not None else slack // 2
            indices = start + stride * np.arange(self.num_frames)
            _check_spacing(np.diff(times[indices]))
        else:
            step = stride * gap  # seconds between chosen frames
            fits = np.flatnonzero(
                times + (self.num_frames - 1) * step <= times[-1] + SPACING_TOLERANCE * step
            )
            if len(fits) == 0:
                return None
            start = int(fits[rng.integers(len(fits))]) if rng is not None else int(fits[(len(fits) - 1) // 2])
            indices = _walk(times, start, step, self.num_frames)
        if self.num_frames == 1:
            return indices, (1.0 / (stride * gap) if gap > 0 else 0.0)
        return indices, (self.num_frames - 1) / float(times[indices[-1]] - times[indices[0]])


def _check_spacing(gaps: np.ndarray) -> None:
    if len(gaps) and np.abs(gaps - np.median(gaps)).max() > SPACING_TOLERANCE * np.median(gaps):
        raise VideoReadError(
            "irregular_fps", f"frame gaps {np.round(gaps.min(), 4)}..{np.round(gaps.max(), 4)} s in one clip"
        )


def _walk(times: np.ndarray, start: int, step: float, count: int) -> np.ndarray:
    """From ``start``, ``count - 1`` steps to the frame nearest the previous one + ``step`` s."""
    indices = [start]
    for _ in range(count - 1):
        target = times[indices[-1]] + step
        j = int(np.searchsorted(times, target))
        j = min((k for k in (j - 1, j) if 0 <= k < len(times)), key=lambda k: abs(times[k] - target))
        if j <= indices[-1] or abs(times[j] - target) > SPACING_TOLERANCE * step:
            raise VideoReadError(
                "irregular_fps", f"no frame within {SPACING_TOLERANCE:.0%} of {target:.3f} s"
            )
        indices.append(j)
    return np.asarray(indices)


def resize_center_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, h, w, 3) uint8: scale the short side to cover ``size``, centre-crop.

    The crop window is cut from the source first (aspect of ``size``), then resized, which is the
    same as resize-then-crop up to interpolation at the borders. Area interpolation when
    shrinking, bilinear when enlarging.
    """
    h, w = size
    src_h, src_w = frames.shape[1:3]
    scale = max(h / src_h, w / src_w)
    crop_h, crop_w = min(src_h, round(h / scale)), min(src_w, round(w / scale))
    top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
    window = frames[:, top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (h, w):
        return np.ascontiguousarray(window)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in window])


def to_model_pixels(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (3, T, H, W) float32 in [-1, 1]."""
    return uint8_to_model(to_channels_first(frames))


def to_channels_first(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 → a (3, T, H, W) uint8 view of the same memory (no copy)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)


def uint8_to_model(pixels: torch.Tensor) -> torch.Tensor:
    """Any shape uint8 (e.g. (B, 3, T, H, W)) → the same shape float32 in [-1, 1]: ``x / 127.5 - 1``."""
    return pixels.float().div_(127.5).sub_(1.0)
