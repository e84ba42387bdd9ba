"""Clip sampling (which frames, at which effective fps) and the pixel transform.

Only the frames a clip needs are decoded; the transform crops first (a view) and then resizes
the crop, so no full-resolution float copy of the clip ever exists.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["ClipSampler", "resize_center_crop", "to_model_pixels"]

cv2.setNumThreads(1)  # one thread per loader worker; workers provide the parallelism


class ClipSampler:
    """Frame indices of a ``num_frames`` clip at a frame stride or a target fps.

    ``frame_stride`` fixes the step between sampled frames; ``target_fps`` picks
    ``stride = max(1, round(video_fps / target_fps))`` per video; neither means stride 1. The
    effective fps handed to the model is ``video_fps / stride``.
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
        if self.target_fps is not None:
            return max(1, round(video_fps / self.target_fps))
        return 1

    def span(self, video_fps: float) -> int:
        """Frames covered from the first to the last sampled frame, inclusive."""
        return (self.num_frames - 1) * self.stride(video_fps) + 1

    def sample(
        self, num_available: int, video_fps: float, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, float] | None:
        """(indices (num_frames,), effective fps), or None when the video is too short.

        ``rng`` draws a uniform start (training); without it the clip is centred (validation).
        """
        stride, span = self.stride(video_fps), self.span(video_fps)
        if num_available < span:
            return None
        slack = num_available - span
        start = int(rng.integers(slack + 1)) if rng is not None else slack // 2
        return start + stride * np.arange(self.num_frames), video_fps / stride


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
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)  # c t h w
    return pixels.float().div_(127.5).sub_(1.0)
