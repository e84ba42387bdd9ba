"""A video file as a lazy, read-only frame array: indexing decodes exactly the frames asked for.

:class:`VideoFrames` looks like the ``(F, H, W, 3)`` uint8 RGB array of every frame of a video
(``len``, ``shape``, ``ndim``, ``dtype``, indexing with an int, a slice or an integer array,
iteration) but holds no frames: each access decodes what it names, full size, in display
order and orientation (:class:`~tsm_video.data.av_reader.AVReader`). Contiguous slices and
iteration continue one sequential decode (a slice that starts at the previous slice's last
frame reuses it), so a consumer walking the video in chunks decodes every frame once and holds
one chunk (and one frame). Index arrays seek (keyframe, then forward); one decoder serves both,
so a slice after an index read decodes from the start again. A damaged frame raises
:class:`~tsm_video.data.av_reader.VideoReadError` when it is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tsm_video.data.av_reader import AVReader, Source, VideoReadError

__all__ = ["VideoFrames"]


class VideoFrames:
    """Every frame of ``source``, decoded on access. Use as a context manager (closes the file).

    ``shape`` is (F, H, W, 3) with F from the demuxed frame table and (H, W) the displayed
    size (the first frame is decoded once to learn the orientation); ``fps`` is the average
    rate of the frames' timestamps (the header's rate for untimed files). Raises
    VideoReadError (missing / unreadable / no_video / corrupt) when the file cannot be opened
    or its first frame does not decode.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, source: Source) -> None:
        self._reader = AVReader(source)
        try:
            first = self._reader.decode([0])[0]
        except BaseException:
            self._reader.close()
            raise
        table = self._reader.table
        self.shape = (len(table), *first.shape)
        self.fps = table.rate(np.arange(len(table))) or self._reader.nominal_fps
        self._stream: Iterator[np.ndarray] | None = None
        self._next = 0  # display index of the frame the stream yields next
        self._last: np.ndarray | None = None  # frame _next - 1, for a slice that starts there

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stream = None
        self._reader.close()

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(len(self)):
            yield self[start : start + 1][0]

    def __getitem__(self, key) -> np.ndarray:
        """``int`` → (H, W, 3); slice or integer array (any shape) → (*key shape, H, W, 3)."""
        if isinstance(key, int | np.integer):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"frame {int(key)} of a {len(self)}-frame video")
            return self[index : index + 1][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._contiguous(start, max(start, stop))
            key = np.arange(start, stop, step)
        indices = np.asarray(key)
        if indices.dtype.kind not in "iu":
            raise IndexError(f"frames are indexed by int, slice or integer array, not {indices.dtype}")
        flat = np.where(indices < 0, indices + len(self), indices).ravel()
        if flat.size and not ((flat >= 0) & (flat < len(self))).all():
            raise IndexError(f"frame indices outside 0..{len(self) - 1}")
        if not flat.size:
            return np.empty((*indices.shape, *self.shape[1:]), np.uint8)
        self._stream = None  # the decoder moves: a later slice starts a new sequential decode
        out = self._reader.decode(flat)
        return out.reshape(*indices.shape, *self.shape[1:])

    def _contiguous(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start``..``stop - 1`` from the sequential decode (restarted only to go back)."""
        out = np.empty((stop - start, *self.shape[1:]), np.uint8)
        if stop == start:
            return out
        row = 0
        if self._stream is not None and self._last is not None and start == self._next - 1:
            out[0], row = self._last, 1
        elif self._stream is None or start < self._next:
            self._stream, self._next, self._last = self._reader.iter_frames(), 0, None
        while row < len(out):
            frame = next(self._stream, None)
            if frame is None:
                raise VideoReadError("too_short", f"the decoder ended at frame {self._next} of {len(self)}")
            self._next += 1
            if self._next - 1 >= start + row:
                out[row] = frame
                row += 1
        self._last = out[-1].copy()
        return out
