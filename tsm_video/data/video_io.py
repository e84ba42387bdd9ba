"""Whole-video and frame-subset IO shared by the suite: write h264 mp4, read RGB frames.

A *source* is a filesystem path or the bytes of an encoded file (a zip member read into
memory). Every backend returns exactly the requested frames, in display order and display
orientation, or raises :class:`VideoReadError`:

- ``"av"`` (the default, also what ``"auto"`` uses): :class:`~tsm_video.data.av_reader.AVReader`
  identifies frames by their timestamps (see there), so B-frames, open GOPs, edit lists,
  variable frame rates and AVI's packed B-frames all come out right, and damage raises.
- ``"decord"``: decord's random access, which returns wrong frames without raising on some
  ordinary files (MPEG-4 part 2 with B-frames, open-GOP h264). It is used only for a file where
  :func:`verify_decord` has shown that its random access matches a sequential decode — by the
  caller (``data probe --deep`` records it; pass ``decord_verified=True``) or, failing that, on
  the spot for the requested frames (then slower than PyAV: use it to measure, not to train).
  ``"auto"`` uses decord only for files the caller marks verified.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tsm_video.data.av_reader import AVReader, Source, VideoReadError, cover_size, open_container
from tsm_video.data.orientation import Orientation
from tsm_video.fileio import atomic_path

try:  # decord ships wheels for x86-64 only
    import decord
except ImportError:  # pragma: no cover - exercised on machines without decord
    decord = None

__all__ = [
    "Source",
    "VideoInfo",
    "VideoReadError",
    "write_mp4",
    "read_frames",
    "probe_video",
    "decode_frames",
    "decode_clip",
    "count_packets",
    "have_decord",
    "verify_decord",
]

# Decoder threads per reader: loader workers are the parallelism, so one thread each avoids
# oversubscribing the cores (and the per-thread frame buffers).
DECORD_THREADS = 1


@dataclass(frozen=True)
class VideoInfo:
    """Facts of a video stream. ``num_frames`` is the count the container reports.

    ``width``/``height`` are the displayed size (after the display matrix: a left-right mirror
    when ``mirrored``, then ``rotation`` degrees counter-clockwise); ``fps`` the header's
    average rate.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int = 0
    mirrored: bool = False


def have_decord() -> bool:
    """Whether the decord backend is importable here."""
    return decord is not None


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 18,
    keyframe_interval: int | None = None,
    preset: str = "medium",
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB as h264/yuv420p mp4 at ``fps``; atomic.

    ``frames`` may also be an iterable of (H, W, 3) uint8 frames (long videos, little memory).
    yuv420p needs even sides, so an odd height or width is padded by one edge-replicated
    row/column (the file is then (H+1)×W etc.). ``keyframe_interval`` is the GOP length in
    frames (libx264 default when None); ``preset`` is libx264's speed preset. The index (moov)
    goes first ("faststart"), as in web-distributed datasets. The file appears only once fully
    written.
    """
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[0] == 0):
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got shape {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with (
        atomic_path(path) as tmp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container,
    ):
        stream = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                options = {"crf": str(crf), "preset": preset}
                if keyframe_interval is not None:
                    options.update(g=str(keyframe_interval), keyint_min=str(keyframe_interval))
                    options["x264-params"] = "scenecut=0"
                stream.options = options
            elif (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                raise ValueError(f"frame of shape {frame.shape} in a {stream.height}x{stream.width} video")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if stream is None:
            raise ValueError("frames is empty: nothing to encode")
        container.mux(stream.encode())
    return Path(path)


def probe_video(source: Source) -> VideoInfo:
    """Header facts plus the display orientation (decodes the first frame, nothing more).

    Raises VideoReadError (missing / unreadable / no_video / corrupt).
    """
    with open_container(source) as container:
        if not container.streams.video:
            raise VideoReadError("no_video", "no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or stream.codec_context.width <= 0:
            raise VideoReadError("unreadable", "video stream without frame rate or size")
        try:
            frame = next(container.decode(stream), None)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise VideoReadError("corrupt", f"first frame does not decode: {err}") from err
        orientation = Orientation() if frame is None else Orientation.of(frame)
        height, width = orientation.displayed(stream.codec_context.height, stream.codec_context.width)
        return VideoInfo(
            int(stream.frames), float(rate), width, height, orientation.rotation, orientation.mirrored
        )


def count_packets(source: Source, limit: int | None = None) -> int:
    """Demux (never decode) video packets; stop once ``limit`` are seen. A lower bound on frames."""
    count = 0
    with open_container(source) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size > 0 and not packet.is_discard:
                    count += 1
                    if limit is not None and count >= limit:
                        break
        except (av.error.FFmpegError, OSError):
            pass  # truncated or damaged tail: the packets before it still count
    return count


def _check_indices(indices) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence, got shape {indices.shape}")
    if (indices < 0).any():
        raise ValueError("indices must be non-negative")
    return indices


def _resize_cover(frames: np.ndarray, cover: tuple[int, int] | None) -> np.ndarray:
    h, w = cover_size(*frames.shape[1:3], cover)
    if (h, w) == frames.shape[1:3]:
        return frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def _decord_batch(source: Source, indices: np.ndarray) -> np.ndarray:
    """decord's random access, full size (decord applies the display rotation; mirrors it does
    not are caught by :func:`verify_decord`, which compares with PyAV's exact decode)."""
    uri = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    try:
        reader = decord.VideoReader(uri, num_threads=DECORD_THREADS)
        if int(indices.max()) >= len(reader):
            raise VideoReadError("too_short", f"frame {int(indices.max())} requested, {len(reader)} reported")
        return reader.get_batch(indices.tolist()).asnumpy()  # (T, H, W, 3) uint8
    except (RuntimeError, decord.DECORDError) as err:
        if isinstance(err, VideoReadError):
            raise
        raise VideoReadError("corrupt", f"decord: {err}") from err


# Mean absolute difference (0..255) below which decord's frame and the sequential decode's are
# the same picture: both run FFmpeg's decoder and a yuv→rgb conversion that differ by at most
# 1 per pixel (tests/data/test_video_io.py); distinct frames of real video differ far more, and
# frames that do not are the same picture for training.
DECORD_MATCH_TOLERANCE = 1.0


def verify_decord(source: Source, indices=None) -> bool:
    """Whether decord's random access returns the frames a sequential decode has at ``indices``.

    First every packet is decoded in order (a damaged file is never handed to decord, which
    returns stale frames for damage instead of raising); then ``indices`` (default: 16 random
    frames, every 7th, and the last 3) are requested from decord in one batch, in the given
    order, and compared with PyAV's exact decode, both full size. False when decord errors,
    counts frames differently or returns another picture. Raises VideoReadError when the file
    itself cannot be read (``corrupt`` for damage anywhere in it).
    """
    if decord is None:
        return False
    with AVReader(source) as reader:
        damage = reader.scan()
        if damage is not None:
            raise VideoReadError("corrupt", damage)
        n = len(reader.table)
        if indices is None:
            rng = np.random.default_rng(n)
            indices = np.concatenate(
                [rng.permutation(n)[:16], np.arange(0, n, 7), np.arange(max(0, n - 3), n)]
            )
        indices = _check_indices(indices)
        truth = reader.decode(indices)
    try:
        got = _decord_batch(source, indices)
    except VideoReadError:
        return False
    if got.shape != truth.shape:
        return False
    diff = np.abs(got.astype(np.int16) - truth.astype(np.int16)).mean(axis=(1, 2, 3))
    return bool((diff <= DECORD_MATCH_TOLERANCE).all())


def decode_clip(
    source: Source,
    indices,
    backend: str = "auto",
    cover: tuple[int, int] | None = None,
    decord_verified: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode exactly the frames at ``indices`` → (frames (T, h, w, 3) uint8, times (T,) s, fps).

    Frames are in display order and orientation; ``times`` are their display times from the
    first frame of the video; ``fps`` is the video's average rate from its frame timestamps.
    ``cover=(h, w)`` shrinks every frame (aspect kept) to just cover that size — by the decoder
    on the PyAV path, so full-size RGB frames never exist. Backends: see the module docstring.
    Raises VideoReadError (missing / unreadable / no_video / corrupt / too_short;
    ``decord_inexact`` for ``backend="decord"`` on a file decord gets wrong).
    """
    indices = _check_indices(indices)
    if backend not in ("auto", "decord", "av"):
        raise ValueError(f"backend must be 'auto', 'decord' or 'av', got {backend!r}")
    if backend == "decord" and decord is None:
        raise VideoReadError("no_decord", "decord is not installed")
    use_decord = backend == "decord" or (backend == "auto" and decord_verified and decord is not None)
    with AVReader(source) as reader:
        reader.check(indices)
        times = reader.table.times[indices]
        fps = reader.table.rate(np.arange(len(reader.table))) or reader.nominal_fps
        if not use_decord:
            return reader.decode(indices, cover), times, fps
    if not decord_verified and not verify_decord(source, indices):
        raise VideoReadError("decord_inexact", "decord's random access returns other frames for this file")
    return _resize_cover(_decord_batch(source, indices), cover), times, fps


def decode_frames(
    source: Source, indices, backend: str = "auto", cover: tuple[int, int] | None = None
) -> tuple[np.ndarray, float]:
    """Decode exactly the frames at ``indices`` (display order) → ((T, H, W, 3) uint8 RGB, fps).

    ``fps``: the video's average rate from its frame timestamps. See :func:`decode_clip`.
    """
    frames, _, fps = decode_clip(source, indices, backend, cover)
    return frames, fps


def read_frames(
    path: Source, indices=None, backend: str = "auto", cover: tuple[int, int] | None = None
) -> tuple[np.ndarray, float]:
    """Read frames of a video → ((T, H, W, 3) uint8 RGB, fps).

    ``indices=None`` reads every frame present, decoded one by one into a single array (no list
    of frames, no second copy); a file damaged part-way yields the frames before the damage,
    none invented. ``cover=(h, w)`` has the decoder shrink every frame to just cover that size.
    ``path`` may also be the encoded file's bytes. Raises VideoReadError (``.reason``: missing,
    unreadable, corrupt, too_short).
    """
    if indices is not None:
        return decode_frames(path, indices, backend=backend, cover=cover)
    with AVReader(path) as reader:
        frames = reader.decode_prefix(cover)
        return frames, reader.table.rate(np.arange(len(frames))) or reader.nominal_fps
