"""Frame-exact PyAV reading: frames are identified by their timestamps, never by counting after a seek.

Opening a video demuxes every video packet once (no decoding) into a :class:`FrameTable`:
the presentation timestamps in display order (frame ``i`` is the ``i``-th smallest pts), and
the *safe* keyframes — keyframes that no earlier packet (in decode order) is displayed after,
so decoding from one yields every later frame in display order. To decode frame ``i``,
:class:`AVReader` seeks to the last safe keyframe at or before ``pts[i]``, checks that the
demuxer landed there (an earlier safe keyframe also works; anything else falls back to
decoding from the start), decodes forward and keeps the frames whose pts are wanted. Leading
frames of an open GOP (displayed before their keyframe) are dropped unseen: after a seek they
lack their references.

Damage is never papered over: a decoder error or a frame flagged corrupt between the seek
point and the last wanted frame raises ``VideoReadError("corrupt")``. Files whose packets carry
no or duplicate timestamps are decoded from the start, frame ``i`` being the ``i``-th frame out
of the decoder. Frames come out in display orientation (the display matrix is applied), with
optional decoder-side scaling so full-size RGB frames never exist. Orientation comes from the
whole display matrix (:class:`~tsm_video.data.orientation.Orientation`): rotations and
mirror images.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from tsm_video.data.orientation import Orientation
from tsm_video.errors import TSMVideoError

__all__ = [
    "AVReader",
    "FrameTable",
    "VideoReadError",
    "Source",
    "open_container",
    "cover_size",
    "center_window",
]

Source = str | os.PathLike | bytes


class VideoReadError(TSMVideoError, RuntimeError):
    """A video could not be read; ``reason`` is a short machine-readable tag for skip counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError)


def open_container(source: Source) -> av.container.InputContainer:
    """Open ``source`` (path or encoded bytes) with PyAV; VideoReadError missing / unreadable."""
    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source))
    except FileNotFoundError as err:
        raise VideoReadError("missing", str(err)) from err
    except _AV_ERRORS as err:
        raise VideoReadError("unreadable", str(err)) from err


def cover_size(height: int, width: int, cover: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) of a ``height``×``width`` frame shrunk (aspect kept) to just cover ``cover``; never enlarged."""
    if cover is None:
        return height, width
    scale = max(cover[0] / height, cover[1] / width)
    if scale >= 1:
        return height, width
    return math.ceil(height * scale - 1e-6), math.ceil(width * scale - 1e-6)


def center_window(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centred ``size`` window (a view) of an (H, W, ...) ``frame`` that already fits ``size``
    in one side and covers it in the other — exactly the window ``resize_center_crop`` cuts and
    leaves unscaled; any other ``frame`` is returned as it is."""
    (h, w), (height, width) = size, frame.shape[:2]
    if not ((height == h and width >= w) or (width == w and height >= h)):
        return frame
    top, left = (height - h) // 2, (width - w) // 2
    return frame[top : top + h, left : left + w]


@dataclass(frozen=True)
class FrameTable:
    """Every frame of a video stream, from demuxing alone.

    ``pts`` (N,) int64 in display order, in ``time_base`` units; ``times`` (N,) float64 seconds
    since the first frame; ``safe_keyframes`` (K,) int64 pts of keyframes decoding can start
    from, ascending; ``timed`` is False when packets lack distinct timestamps (decode from the
    start and count).
    """

    pts: np.ndarray
    times: np.ndarray
    safe_keyframes: np.ndarray
    time_base: Fraction
    timed: bool

    def __len__(self) -> int:
        return len(self.pts)

    def rate(self, indices) -> float | None:
        """Frames per second of the frames at ``indices``, exact from their integer timestamps.

        ``(n - 1) / span`` over the distinct frames; None for one frame or an untimed table.
        """
        pts = np.unique(self.pts[np.asarray(indices)])
        if len(pts) < 2 or not self.timed:
            return None
        return float((len(pts) - 1) / (Fraction(int(pts[-1] - pts[0])) * self.time_base))

    @classmethod
    def from_packets(
        cls, packets: list[tuple[int | None, bool]], time_base: Fraction, fps: float = 0.0
    ) -> FrameTable:
        """Build from ``(pts, is_keyframe)`` of every non-empty, non-discarded packet in decode order.

        ``fps`` (the header's rate) spaces the frames of an untimed table.
        """
        stamps = [p for p, _ in packets]
        timed = bool(stamps) and None not in stamps and len(set(stamps)) == len(stamps)
        if not timed:
            n = len(packets)
            times = np.arange(n, dtype=np.float64) / (fps if fps > 0 else 1.0)
            return cls(np.arange(n), times, np.zeros(0, np.int64), time_base, False)
        decode_pts = np.asarray(stamps, dtype=np.int64)
        # a keyframe is safe when nothing decoded before it is displayed after it
        shown_before = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], decode_pts[:-1]]))
        key = np.asarray([k for _, k in packets], dtype=bool)
        safe = np.sort(decode_pts[key & (shown_before < decode_pts)])
        pts = np.sort(decode_pts)
        times = (pts - pts[0]).astype(np.float64) * float(time_base)
        return cls(pts, times, safe, time_base, True)


class AVReader:
    """One opened video: its frame table, and exact decoding of any frames of it.

    Use as a context manager. ``thread_count`` decoder threads (1: loader workers are the
    parallelism, and errors stay attributable to their packet).
    """

    def __init__(self, source: Source, thread_count: int = 1) -> None:
        self.source = source
        self._thread_count = thread_count
        self._container = open_container(source)
        try:
            if not self._container.streams.video:
                raise VideoReadError("no_video", "no video stream")
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context.width <= 0:
                raise VideoReadError("unreadable", "video stream without a frame size")
            self.table = self._demux_table()
        except BaseException:
            self._container.close()
            raise
        self.orientation: Orientation | None = None  # display matrix, known after the first decode
        self._safe = set(self.table.safe_keyframes.tolist())
        self._pending = iter(())

    def __enter__(self) -> AVReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._drop_pending()
        self._container.close()

    def _drop_pending(self) -> None:
        """Close the suspended demuxing generator: it holds the decoder's frames and buffers."""
        pending, self._pending = self._pending, iter(())
        if hasattr(pending, "close"):
            pending.close()

    # -- facts ------------------------------------------------------------------------------
    @property
    def stored_size(self) -> tuple[int, int]:
        """(height, width) of the coded frames."""
        return self._stream.codec_context.height, self._stream.codec_context.width

    @property
    def reported_frames(self) -> int:
        """The frame count the container header claims (0 when it has none)."""
        return int(self._stream.frames)

    @property
    def nominal_fps(self) -> float:
        """The container's average frame rate (header), for one-frame clips; 0 when absent."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else 0.0

    def _demux_table(self) -> FrameTable:
        packets = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size > 0 and not packet.is_discard:
                    packets.append((packet.pts, packet.is_keyframe))
        except _AV_ERRORS:
            pass  # a damaged or truncated tail: the packets before it are the video
        if not packets:
            raise VideoReadError("unreadable", "no video packets")
        return FrameTable.from_packets(packets, self._stream.time_base, self.nominal_fps)

    # -- decoding ---------------------------------------------------------------------------
    def _restart(self, keyframe_pts: int | None) -> int | None:
        """Position demuxing at a safe keyframe ≤ ``keyframe_pts``, or at the start (None).

        Returns the pts decoding starts from (None: the first packet, nothing to drop).
        """
        self._drop_pending()
        if keyframe_pts is not None:
            try:
                self._container.seek(keyframe_pts, stream=self._stream, backward=True)
                self._stream.codec_context.flush_buffers()
                packets = self._packets()
                first = next(packets, None)
            except _AV_ERRORS:
                first = None
            safe = first is not None and first.is_keyframe and first.pts is not None
            if safe and first.pts <= keyframe_pts and first.pts in self._safe:
                self._pending = _chain(first, packets)
                return int(first.pts)
        self._container.close()  # decode from the very start: always right, only slower
        self._container = open_container(self.source)
        self._stream = self._container.streams.video[0]
        self._configure()
        self._pending = self._packets()
        return None

    def _configure(self) -> None:
        context = self._stream.codec_context
        if not context.is_open:
            context.thread_count = self._thread_count

    def _packets(self):
        yield from self._container.demux(self._stream)

    def check(self, indices) -> np.ndarray:
        """``indices`` as int64; VideoReadError too_short when one is past the frames present."""
        indices = np.asarray(indices, dtype=np.int64)
        if int(indices.max()) >= len(self.table):
            last = int(indices.max())
            raise VideoReadError("too_short", f"frame {last} requested, {len(self.table)} present")
        return indices

    def decode(self, indices, cover: tuple[int, int] | None = None, crop: bool = False) -> np.ndarray:
        """Frames ``indices`` (display order) → (T, h, w, 3) uint8 RGB in display orientation.

        ``cover=(h, w)``: the decoder shrinks each frame (aspect kept) just enough to cover it.
        ``crop=True`` (with ``cover``): each frame that covers ``(h, w)`` is centre-cropped to
        exactly ``(h, w)`` as it lands in the output, so the clip is allocated at its final
        size (the window :func:`~tsm_video.data.clips.resize_center_crop` would cut).
        Raises VideoReadError too_short (an index past the frames present) or corrupt.
        """
        indices = self.check(indices)
        try:
            return self._decode(indices, cover, crop, timed=self.table.timed)
        except _Untimed:
            return self._decode(indices, cover, crop, timed=False)

    def _decode(self, indices: np.ndarray, cover, crop: bool, timed: bool) -> np.ndarray:
        table = self.table
        keys = table.pts if timed else np.arange(len(table))
        wanted: dict[int, list[int]] = {}  # frame key (pts, or position out of the decoder) → output rows
        for row, i in enumerate(indices.tolist()):
            wanted.setdefault(int(keys[i]), []).append(row)
        todo = sorted(wanted)
        safe = table.safe_keyframes if timed else np.zeros(0, np.int64)
        known = set(table.pts.tolist())
        out: np.ndarray | None = None
        self._configure()
        while todo:
            before = safe[safe <= todo[0]]
            keyframe = self._restart(int(before[-1]) if len(before) else None)
            counter = 0
            for frame in self._decoded(keyframe):
                if timed:
                    if frame.pts is None or frame.pts not in known:
                        raise _Untimed
                    key = int(frame.pts)
                else:
                    key, counter = counter, counter + 1
                if keyframe is not None and key < keyframe:
                    continue  # an open GOP's leading frame: its references precede the seek point
                if frame.is_corrupt:
                    raise VideoReadError("corrupt", f"frame at {key} decoded with errors")
                if key in wanted and todo and key >= todo[0]:
                    rgb = self._to_rgb(frame, cover)
                    if crop and cover is not None:
                        rgb = center_window(rgb, cover)
                    if out is None:
                        out = np.empty((len(indices), *rgb.shape), np.uint8)
                    out[wanted[key]] = rgb
                    todo.remove(key)
                    # a gap of more than one keyframe to the next wanted frame: seek over it
                    if todo and np.count_nonzero((safe > key) & (safe <= todo[0])) > 1:
                        break
                if not todo:
                    break
            else:
                if todo:
                    raise VideoReadError("too_short", f"{len(todo)} wanted frames never left the decoder")
        return out

    def decode_prefix(self, cover: tuple[int, int] | None = None) -> np.ndarray:
        """Every frame from the start up to the first damage → (n, h, w, 3) uint8, display order.

        Frames land one by one in an array sized by the frame table (no list of frames, no
        second copy). Decoding stops at the first decoder error or corrupt frame, or at a frame
        that is not the next one in display order; the frames before it are returned. Raises
        VideoReadError when not even the first frame decodes.
        """
        out: np.ndarray | None = None
        count, failure = 0, "no frame decoded"
        try:
            for rgb in self.iter_frames(cover):
                if out is None:
                    out = np.empty((len(self.table), *rgb.shape), np.uint8)
                out[count] = rgb
                count += 1
        except VideoReadError as err:
            failure = str(err)
        if out is None or count == 0:
            raise VideoReadError("corrupt", f"{failure}")
        return out[:count]

    def iter_frames(self, cover: tuple[int, int] | None = None):
        """Frames from the first on, in display order, one (h, w, 3) uint8 array at a time.

        One sequential decode, nothing held but the decoder's own frames. Raises
        VideoReadError("corrupt") at the first decoder error or corrupt frame, or at a frame
        that is not the next one in display order, after yielding the frames before it; ends
        early (without error) when the decoder runs out before the frame table does. Another
        ``decode``/``scan`` on this reader ends the iteration.
        """
        self._configure()
        self._restart(None)
        for count, frame in enumerate(self._decoded(None)):
            if count >= len(self.table) or (self.table.timed and frame.pts != self.table.pts[count]):
                raise VideoReadError("corrupt", f"frame {count} missing (decoder gave pts {frame.pts})")
            if frame.is_corrupt:
                raise VideoReadError("corrupt", f"frame {count} decoded with errors")
            yield self._to_rgb(frame, cover)

    def scan(self, segments: int | None = None) -> str | None:
        """Decode packets without converting them; the first damage found, or None when clean.

        ``segments=None`` decodes every packet from the start; ``segments=k`` decodes k evenly
        spaced keyframe-to-keyframe stretches (all of them when the video has fewer).
        """
        self._configure()
        safe = self.table.safe_keyframes
        if segments is None or not self.table.timed or len(safe) <= segments:
            starts = [None]
            ends = [None]
        else:
            chosen = np.unique(np.linspace(0, len(safe) - 1, segments).round().astype(int))
            starts = [int(safe[i]) for i in chosen]
            ends = [int(safe[i + 1]) if i + 1 < len(safe) else None for i in chosen]
        for start, end in zip(starts, ends):
            keyframe = self._restart(start)
            try:
                for frame in self._decoded(keyframe):
                    if keyframe is not None and frame.pts is not None and frame.pts < keyframe:
                        continue
                    if frame.is_corrupt:
                        return f"frame at pts {frame.pts} decoded with errors"
                    if end is not None and frame.pts is not None and frame.pts >= end:
                        break
            except VideoReadError as err:
                return str(err)
        return None

    def _decoded(self, keyframe: int | None):
        """Frames from the pending packets; decoder errors → corrupt.

        Errors in a packet displayed before the seek keyframe (an open GOP's leading frame,
        whose references precede the seek point) are not the file's, and nobody wants it.
        """
        for packet in self._pending:
            leading = keyframe is not None and packet.pts is not None and packet.pts < keyframe
            try:
                frames = packet.decode()
            except _AV_ERRORS as err:
                if leading:
                    continue
                raise VideoReadError("corrupt", f"decoder error at pts {packet.pts}: {err}") from err
            yield from frames

    @property
    def rotation(self) -> int | None:
        """Display rotation, degrees counter-clockwise (after a mirror, see ``orientation``);
        None before the first decode."""
        return None if self.orientation is None else self.orientation.rotation

    def _to_rgb(self, frame: av.VideoFrame, cover: tuple[int, int] | None) -> np.ndarray:
        if self.orientation is None:  # the stream's display matrix: read once
            self.orientation = Orientation.of(frame)
        orientation = self.orientation
        height, width = frame.height, frame.width
        h, w = orientation.displayed(*cover_size(*orientation.displayed(height, width), cover))
        # scale in stored orientation (h, w are stored-axis sizes again), then orient
        if (h, w) == (height, width):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
        return orientation.apply(rgb)


def _chain(first, rest):
    yield first
    yield from rest


class _Untimed(Exception):
    """A decoded frame's pts is not in the table: identify frames by counting from the start."""
