"""Display orientation from a container's display matrix: the 4 rotations and their 4 mirror images.

A display matrix (``AV_FRAME_DATA_DISPLAYMATRIX``, 3×3 int32, 16.16 fixed point) maps a stored
pixel ``(x, y)`` (y down) to its displayed place ``x' = a·x + c·y``, ``y' = b·x + d·y``
(``a, b, c, d`` = entries 0, 1, 3, 4). Rounded to the nearest right angle, that is a transpose
or not, then a flip of rows and/or columns: the same eight pictures ``ffmpeg``'s autorotate
shows (``transpose``/``hflip``/``vflip``). ``frame.rotation`` alone is not enough: it reads a
horizontal mirror as a 180° rotation and ignores a vertical one.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.sidedata.sidedata import Type

__all__ = ["Orientation"]


@dataclass(frozen=True)
class Orientation:
    """How stored frames are shown: transpose (swap axes), then reverse rows and/or columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_matrix(cls, matrix) -> Orientation:
        """From the 9 entries of a display matrix (any scale; only the dominant signs matter)."""
        a, b, _, c, d = (int(v) for v in np.asarray(matrix).ravel()[:5])
        if abs(a) + abs(d) >= abs(b) + abs(c):  # x stays x (mirrored or not), y stays y
            return cls(False, d < 0, a < 0)
        return cls(True, b < 0, c < 0)  # rows of the shown picture follow b·x, columns c·y

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Orientation:
        """The orientation a decoded frame's display matrix asks for (identity without one).

        Read from a 2×2 copy of the frame (it carries the side data): PyAV's ``side_data``
        makes a reference cycle with its frame, and a decoded frame kept alive until the cyclic
        garbage collector runs keeps its decoder's whole buffer pool alive (measured: ~35 MB per
        720p clip in a loader worker). Call it once per stream.
        """
        side = frame.reformat(width=2, height=2, format="rgb24").side_data.get(Type.DISPLAYMATRIX)
        if side is None:
            return cls()
        return cls.from_matrix(np.frombuffer(bytes(side), dtype=np.int32))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W, ...) stored → displayed (a view)."""
        out = image.swapaxes(0, 1) if self.transpose else image
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def displayed(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of a stored ``height``×``width`` frame as shown."""
        return (width, height) if self.transpose else (height, width)

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise, applied after :attr:`mirrored` (0, 90, 180, 270)."""
        return self._as_rotation()[0]

    @property
    def mirrored(self) -> bool:
        """Whether the picture is mirrored left-right before the :attr:`rotation`."""
        return self._as_rotation()[1]

    def _as_rotation(self) -> tuple[int, bool]:
        probe = np.arange(6).reshape(2, 3)
        shown = self.apply(probe)
        for mirrored in (False, True):
            for quarter in range(4):
                candidate = np.rot90(probe[:, ::-1] if mirrored else probe, quarter)
                if candidate.shape == shown.shape and (candidate == shown).all():
                    return 90 * quarter, mirrored
        raise AssertionError("unreachable: the eight orientations are all rot90^k ∘ mirror^m")
