"""Streaming video-clip dataset: index records → decoded, cropped clips for the model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tsm_video.data.clips import ClipSampler, resize_center_crop, to_model_pixels
from tsm_video.data.index import VideoRecord
from tsm_video.data.stream import ShardedStream, SkipSample
from tsm_video.data.video_io import Source, VideoReadError, count_packets, decode_frames, probe_video

__all__ = ["VideoClipDataset", "load_clip"]


def load_clip(
    source: Source,
    sampler: ClipSampler,
    size: tuple[int, int] | None,
    rng: np.random.Generator | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, float]:
    """Decode one clip → ((T, h, w, 3) uint8, effective fps). Raises VideoReadError.

    Frame positions come from the header's frame count; when that count is over-reported (the
    wanted frames do not all exist), the clip is redrawn once inside the frames demuxing proves
    present. Frames are scaled by the decoder (to just cover ``size``) and then centre-cropped.
    """
    info = probe_video(source)
    available = info.num_frames if info.num_frames > 0 else count_packets(source)
    scale_to = None
    if size is not None:  # shrink while decoding to just cover ``size``; the crop comes after
        scale = max(size[0] / info.height, size[1] / info.width)
        if scale < 1:
            scale_to = (math.ceil(info.height * scale - 1e-6), math.ceil(info.width * scale - 1e-6))
    for attempt in range(2):
        plan = sampler.sample(available, info.fps, rng)
        if plan is None:
            raise VideoReadError("too_short", f"{available} frames, a clip spans {sampler.span(info.fps)}")
        indices, fps = plan
        try:
            frames, _ = decode_frames(source, indices, backend=backend, scale_to=scale_to)
            break
        except VideoReadError as err:
            if err.reason != "too_short" or attempt == 1:
                raise
            available = min(available - 1, count_packets(source))
    if size is not None:
        frames = resize_center_crop(frames, size)
    return frames, fps


class VideoClipDataset(ShardedStream):
    """Clips of ``num_frames`` frames from indexed videos, sharded by (rank, worker).

    Yields ``{"pixels": (3, T, H, W) float32 in [-1, 1], "caption": str, "fps": float
    (effective), "id": str}`` plus the stream bookkeeping keys ``_position``/``_skips`` that
    :class:`~tsm_video.data.stream.StreamLoader` consumes. Training draws a random start per
    (seed, epoch, video); validation (``train=False``) takes centred clips in index order.
    Videos that cannot be used are skipped and counted in ``skipped`` by reason (missing,
    unreadable, corrupt, too_short, zip_damaged). Construction does no IO.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        num_frames: int = 16,
        frame_stride: int | None = None,
        target_fps: float | None = None,
        size: tuple[int, int] | None = (320, 512),
        train: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            train=train, seed=seed, shuffle_buffer=shuffle_buffer, rank=rank, world_size=world_size
        )
        self.records = records
        self.sampler = ClipSampler(num_frames, frame_stride, target_fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.backend = backend

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int, rng: np.random.Generator | None) -> dict:
        record = self.records[index]
        try:
            source = record.load()
        except (KeyError, ValueError, OSError) as err:
            raise SkipSample("zip_damaged", f"{record.id}: {err}") from err
        try:
            frames, fps = load_clip(source, self.sampler, self.size, rng, self.backend)
        except VideoReadError as err:
            raise SkipSample(err.reason, f"{record.id}: {err}") from err
        return {
            "pixels": to_model_pixels(frames),
            "caption": record.caption,
            "fps": float(fps),
            "id": record.id,
        }
