"""Whole-video and frame-subset IO shared by the suite: write h264 mp4, read RGB frames.

A *source* is a filesystem path or the bytes of an encoded file (a zip member read into
memory). Reading prefers decord (random access through its keyframe index) and falls back to
PyAV (seek to the keyframe before the first wanted frame, decode forward only to the last).
Before decord is asked for any frame, the frame's existence is proved by counting demuxed
video packets (no decoding), so frame counts that the container over-reports never reach
decord — the case where decord can hang near the end of a file.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tsm_video.errors import TSMVideoError

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
    "count_packets",
    "have_decord",
]

Source = str | os.PathLike | bytes

# Decoder threads per reader: loader workers are the parallelism, so one thread each avoids
# oversubscribing the cores (and the per-thread frame buffers).
DECORD_THREADS = 1


class VideoReadError(TSMVideoError, RuntimeError):
    """A video could not be read; ``reason`` is a short machine-readable tag for skip counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """Header facts of a video stream. ``num_frames`` is the count the container reports."""

    num_frames: int
    fps: float
    width: int
    height: int


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4.tmp", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                    raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    frame = np.pad(
                        frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge"
                    )
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
                    raise ValueError(
                        f"frame of shape {frame.shape} in a {stream.height}x{stream.width} video"
                    )
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            if stream is None:
                raise ValueError("frames is empty: nothing to encode")
            container.mux(stream.encode())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a video is an ordinary readable file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _open_av(source: Source) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source))
    except FileNotFoundError as err:
        raise VideoReadError("missing", str(err)) from err
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError("unreadable", str(err)) from err


def probe_video(source: Source) -> VideoInfo:
    """Read the container header (no decoding). Raises VideoReadError (missing/unreadable/no_video)."""
    with _open_av(source) as container:
        if not container.streams.video:
            raise VideoReadError("no_video", "no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or stream.codec_context.width <= 0:
            raise VideoReadError("unreadable", "video stream without frame rate or size")
        width, height = stream.codec_context.width, stream.codec_context.height
        return VideoInfo(int(stream.frames), float(rate), width, height)


def count_packets(source: Source, limit: int | None = None) -> int:
    """Demux (never decode) video packets; stop once ``limit`` are seen. A lower bound on frames."""
    count = 0
    with _open_av(source) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size > 0:
                    count += 1
                    if limit is not None and count >= limit:
                        break
        except (av.error.FFmpegError, OSError):
            pass  # truncated or damaged tail: the packets before it still count
    return count


def _check_indices(indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence, got shape {indices.shape}")
    if (indices < 0).any():
        raise ValueError("indices must be non-negative")
    return indices


def _decode_decord(source: Source, indices: np.ndarray, scale_to=None) -> tuple[np.ndarray, float]:
    height, width = scale_to or (-1, -1)
    uri = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    reader = decord.VideoReader(uri, num_threads=DECORD_THREADS, width=width, height=height)
    fps = float(reader.get_avg_fps())
    if int(indices.max()) >= len(reader):
        raise VideoReadError("too_short", f"frame {int(indices.max())} requested, {len(reader)} reported")
    frames = reader.get_batch(indices.tolist()).asnumpy()  # (T, H, W, 3) uint8
    return frames, fps


def _decode_av(source: Source, indices: np.ndarray | None, scale_to=None) -> tuple[np.ndarray, float]:
    """Seek to the keyframe at or before the first wanted frame; decode forward to the last one.

    ``indices=None`` decodes frames 0, 1, ... up to the first missing one. Packets that fail to
    decode (a damaged or truncated tail) are skipped; wanted frames that never appear raise
    ``too_short`` or ``corrupt``.
    """
    resize = (
        {} if scale_to is None else {"height": scale_to[0], "width": scale_to[1], "interpolation": "AREA"}
    )
    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if indices is None else int(indices.max())
    out: dict[int, np.ndarray] = {}
    failed = False
    with _open_av(source) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate)
        start_pts = stream.start_time or 0
        ticks_per_frame = 1 / (float(stream.time_base) * fps)  # stream time-base ticks per frame
        if indices is not None and int(indices.min()) > 0:
            target = start_pts + int(int(indices.min()) * ticks_per_frame)
            container.seek(target, stream=stream, backward=True)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, OSError):
                    failed = True
                    continue
                for frame in frames:
                    index = round((frame.pts - start_pts) / ticks_per_frame)
                    if (wanted is None or index in wanted) and index not in out:
                        out[index] = frame.to_ndarray(format="rgb24", **resize)
                if last is not None and last in out and len(out) == len(wanted):
                    break
        except (av.error.FFmpegError, OSError):
            failed = True
    if wanted is None:  # keep the run of frames 0, 1, 2, ... up to the first one that failed
        wanted = set(range(next(i for i in range(len(out) + 1) if i not in out)))
        if not wanted:
            raise VideoReadError("corrupt" if failed else "unreadable", "no frame could be decoded")
    missing = sorted(wanted - set(out))
    if missing:
        reason = "corrupt" if failed and missing[0] < max(out, default=-1) else "too_short"
        raise VideoReadError(reason, f"frames {missing[:4]} not decodable ({len(out)} decoded)")
    order = sorted(wanted) if indices is None else indices
    return np.stack([out[int(i)] for i in order]), fps


def decode_frames(
    source: Source, indices, backend: str = "auto", scale_to: tuple[int, int] | None = None
) -> tuple[np.ndarray, float]:
    """Decode exactly the frames at ``indices`` (display order) → ((T, H, W, 3) uint8 RGB, fps).

    ``backend``: "decord", "av" or "auto" (decord, then PyAV if decord fails). Frames are only
    requested from decord after demuxing proves ``max(indices) + 1`` video packets exist.
    ``scale_to=(h, w)`` has the decoder scale the frames while converting them to RGB (area
    filter), so full-resolution RGB frames never exist. Raises VideoReadError with reason
    missing / unreadable / corrupt / too_short.
    """
    indices = _check_indices(indices)
    if backend not in ("auto", "decord", "av"):
        raise ValueError(f"backend must be 'auto', 'decord' or 'av', got {backend!r}")
    if backend == "av" or (backend == "auto" and decord is None):
        return _decode_av(source, indices, scale_to)
    if decord is None:
        raise VideoReadError("no_decord", "decord is not installed")
    need = int(indices.max()) + 1
    available = count_packets(source, limit=need)
    if available < need:
        raise VideoReadError("too_short", f"frame {need - 1} requested, only {available} frames present")
    try:
        return _decode_decord(source, indices, scale_to)
    except VideoReadError:
        raise
    except (RuntimeError, decord.DECORDError) as err:
        if backend == "decord":
            raise VideoReadError("corrupt", str(err)) from err
        return _decode_av(source, indices, scale_to)


def read_frames(path: Source, indices=None, backend: str = "auto") -> tuple[np.ndarray, float]:
    """Read frames of a video → ((T, H, W, 3) uint8 RGB, fps).

    ``indices=None`` reads every decodable frame (the count proved by demuxing, not the header's
    claim; a truncated file yields the frames before the damage). ``path`` may also be the
    encoded file's bytes. Raises VideoReadError (``.reason``: missing, unreadable, corrupt,
    too_short).
    """
    if indices is not None:
        return decode_frames(path, indices, backend=backend)
    if backend == "av" or decord is None:
        return _decode_av(path, None)
    count = count_packets(path)
    if count == 0:
        raise VideoReadError("unreadable", f"{path!s:.200} has no video packets")
    try:
        return decode_frames(path, np.arange(count), backend="decord")
    except VideoReadError:
        if backend == "decord":
            raise
        return _decode_av(path, None)  # damaged tail: keep every frame that decodes
