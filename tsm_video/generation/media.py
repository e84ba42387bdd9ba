"""Turn generated clips into files: uint8 frames, gif, frame-grid PNG and labelled compare grids.

mp4 files are written by :func:`tsm_video.data.video_io.write_mp4` (h264 via PyAV, atomic); the
gif and PNG writers here are atomic too (temporary file in the same folder, then rename), so a
killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tsm_video.fileio import atomic_path

__all__ = ["to_uint8_frames", "write_gif", "write_frame_grid", "compare_grid", "atomic_path"]


def to_uint8_frames(clip: torch.Tensor) -> np.ndarray:
    """One decoded clip ``(3, F, H, W)`` in ``[-1, 1]`` → frames ``(F, H, W, 3)`` uint8 RGB."""
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a clip of shape (3, F, H, W), got {tuple(clip.shape)}")
    pixels = ((clip.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()  # f h w c


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write ``frames (F, H, W, 3)`` uint8 as a looping gif at ``fps`` (gif delays are whole
    centiseconds, so the frame delay is ``100 / fps`` rounded to one)."""
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=10 * max(1, round(100 / fps)),
            loop=0,
        )


def write_frame_grid(path: str | Path, frames: np.ndarray, columns: int = 8) -> None:
    """Tile ``frames (F, H, W, 3)`` row-major into one PNG with ``min(F, columns)`` columns."""
    num, height, width, _ = frames.shape
    cols = min(num, columns)
    rows = -(-num // cols)
    canvas = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
    for k, frame in enumerate(frames):
        r, c = divmod(k, cols)
        canvas[r * height : (r + 1) * height, c * width : (c + 1) * width] = frame
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")


def _label_strip(label: str, width: int, height: int) -> np.ndarray:
    """A black ``(height, width, 3)`` strip with ``label`` centred in white."""
    strip = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=max(8, int(height * 0.7)))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    draw.text(
        ((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top),
        label,
        fill=(255, 255, 255),
        font=font,
    )
    return np.asarray(strip)


def compare_grid(clips: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Side-by-side compare video: clips ``(F, H, W, 3)`` in a row, each under its label.

    Returns frames ``(F, H + L, n * W, 3)`` uint8 where ``L`` is the label strip height.
    """
    if len(clips) != len(labels) or not clips:
        raise ValueError(f"need one label per clip, got {len(clips)} clips and {len(labels)} labels")
    shapes = {clip.shape for clip in clips}
    if len(shapes) != 1:
        raise ValueError(f"compare clips must share one shape, got {sorted(shapes)}")
    num, height, width, _ = clips[0].shape
    strip_height = max(12, height // 12)
    panels = []
    for clip, label in zip(clips, labels):
        strip = np.broadcast_to(_label_strip(label, width, strip_height), (num, strip_height, width, 3))
        panels.append(np.concatenate([strip, clip], axis=1))  # f (L+h) w c
    return np.concatenate(panels, axis=2)  # f (L+h) (n w) c
