"""A barcoded video corpus made with PyAV alone (no ffmpeg binary): frames that name themselves.

Frame ``i`` is a 4×6 grid of 16-px cells (64×96, H×W). Three corner cells are orientation
markers (top-left white, the other three corners black), eight cells carry the bits of ``i``
and eight more their complements. :func:`read_barcode` thresholds each cell's inner mean, so
lossy codecs read back exactly, and a frame that is rotated, mirrored, damaged or a blend of
two frames fails the marker or complement check (it reads as -1, never as another number).

:func:`build_corpus` writes the files the decoders are tested on: h264 with B-frames, open GOP
and B-pyramid; MPEG-4 part 2 with B-frames in .mp4 and .avi; VP9 and AV1 where PyAV's bundled
encoders allow; variable frame rate (24 fps, then 12 fps); a 90° display matrix, and one that also
mirrors; and an h264
file with random bytes over its middle.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["CELL", "GRID", "barcode_frame", "read_barcode", "read_barcodes", "build_corpus", "CorpusFile"]

CELL, GRID = 16, (4, 6)  # cell side in px; rows × columns
_MARKERS = {(0, 0): 1, (0, GRID[1] - 1): 0, (GRID[0] - 1, 0): 0, (GRID[0] - 1, GRID[1] - 1): 0}
_FREE = [(r, c) for r in range(GRID[0]) for c in range(GRID[1]) if (r, c) not in _MARKERS]
_BITS = _FREE[:8]  # bit k of the frame number (LSB first)
_COMPLEMENTS = _FREE[8:16]


def barcode_frame(index: int) -> np.ndarray:
    """(64, 96, 3) uint8 RGB frame carrying ``index`` (0 ≤ index < 256)."""
    if not 0 <= index < 256:
        raise ValueError(f"barcode frames carry 0..255, got {index}")
    cells = np.full(GRID, 0.5)
    for (r, c), value in _MARKERS.items():
        cells[r, c] = value
    for k, ((r, c), (rc, cc)) in enumerate(zip(_BITS, _COMPLEMENTS)):
        bit = (index >> k) & 1
        cells[r, c], cells[rc, cc] = bit, 1 - bit
    image = np.kron(cells, np.ones((CELL, CELL))) * 200 + 28  # black 28, white 228, grey 128
    return np.repeat(image[..., None], 3, axis=-1).astype(np.uint8)


def read_barcode(frame: np.ndarray) -> int:
    """The index a (H, W, 3) frame carries, or -1 when the markers or complements disagree.

    The frame may be any size with the grid's aspect (the decoders' scaled outputs): each cell's
    inner half is averaged and thresholded at mid-grey.
    """
    h, w = frame.shape[:2]
    if abs(h * GRID[1] - w * GRID[0]) > max(h, w) * 0.05:  # wrong aspect: rotated or squeezed
        return -1
    grey = frame.astype(np.float64).mean(axis=-1)
    ch, cw = h / GRID[0], w / GRID[1]

    def cell(r: int, c: int) -> int:
        inner = grey[int((r + 0.25) * ch) : int((r + 0.75) * ch), int((c + 0.25) * cw) : int((c + 0.75) * cw)]
        mean = inner.mean()
        if 88 < mean < 168:  # neither black nor white: damaged or blended
            return -1
        return int(mean > 128)

    if any(cell(r, c) != v for (r, c), v in _MARKERS.items()):
        return -1
    bits = [cell(r, c) for r, c in _BITS]
    if any(b < 0 or cell(r, c) != 1 - b for b, (r, c) in zip(bits, _COMPLEMENTS)):
        return -1
    return sum(b << k for k, b in enumerate(bits))


def read_barcodes(frames: np.ndarray) -> list[int]:
    """:func:`read_barcode` of every frame of (T, H, W, 3)."""
    return [read_barcode(f) for f in frames]


class CorpusFile:
    """One corpus video: its path, display times (s), displayed (H, W), rotation (° CCW) and
    whether the display matrix mirrors left-right after rotating (``hflip``)."""

    def __init__(
        self,
        path: Path,
        times: list[float],
        display_hw: tuple[int, int],
        rotation: int = 0,
        hflip: bool = False,
    ):
        self.path, self.times, self.display_hw, self.rotation = path, times, display_hw, rotation
        self.hflip = hflip
        self.damaged = False

    def ids(self, frames: np.ndarray) -> list[int]:
        """Barcodes of decoded (display-orientation) frames, read in the stored orientation."""
        stored = frames[:, :, ::-1] if self.hflip else frames  # undo the mirror, then the rotation
        return read_barcodes(np.rot90(stored, -self.rotation // 90, axes=(1, 2)) if self.rotation else stored)

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def __repr__(self) -> str:
        return self.path.name


def _encode(
    path: Path,
    codec: str,
    num_frames: int,
    *,
    fmt: str | None = None,
    options: dict | None = None,
    b_frames: int | None = None,
    gop: int = 24,
    fps: int = 24,
    times: list[Fraction] | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    pix_fmt: str = "yuv420p",
) -> list[float]:
    """Encode barcode frames 0..num_frames-1; ``times`` (s) gives each frame's pts. → display times."""
    time_base = Fraction(1, 1200) if times is not None else Fraction(1, fps)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = GRID[1] * CELL, GRID[0] * CELL, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(barcode_frame(i), format="rgb24")
            frame.pts = int(times[i] / time_base) if times is not None else i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    if times is not None:
        return [float(t) for t in times]
    return [i / fps for i in range(num_frames)]


def build_corpus(root: Path, num_frames: int = 72) -> dict[str, CorpusFile]:
    """Write the corpus into ``root``; name → :class:`CorpusFile`. Skips codecs PyAV lacks."""
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per file
    out: dict[str, CorpusFile] = {}
    hw = (GRID[0] * CELL, GRID[1] * CELL)

    def add(name: str, *args, **kwargs) -> None:
        path = root / name
        rotation, hflip = kwargs.get("rotation") or 0, kwargs.get("hflip", False)
        out[name] = CorpusFile(
            path, _encode(path, *args, **kwargs), hw[::-1] if rotation % 180 else hw, rotation, hflip
        )

    x264 = "bframes=3:b-pyramid=normal:open-gop=1:keyint=24:min-keyint=24:scenecut=0:b-adapt=0"
    add("h264_opengop_bpyramid.mp4", "libx264", num_frames, options={"x264-params": x264, "crf": "20"})
    add("mpeg4_bframes.mp4", "mpeg4", num_frames, b_frames=2, gop=12, options={"qscale": "3"})
    add("mpeg4_bframes.avi", "mpeg4", num_frames, b_frames=2, gop=12, options={"qscale": "3"})
    if "libvpx-vp9" in av.codecs_available:
        add("vp9.webm", "libvpx-vp9", num_frames, options={"crf": "30", "b:v": "0", "deadline": "realtime"})
    if "libsvtav1" in av.codecs_available:
        add("av1.mp4", "libsvtav1", num_frames, options={"preset": "8", "crf": "25"})
    vfr = [Fraction(i, 24) for i in range(num_frames // 2)]
    vfr += [vfr[-1] + Fraction(k, 12) for k in range(1, num_frames - len(vfr) + 1)]
    add("h264_vfr.mp4", "libx264", num_frames, times=vfr, options={"x264-params": x264, "crf": "20"})
    if "libsvtav1" in av.codecs_available:
        add("av1_vfr.mkv", "libsvtav1", num_frames, times=vfr, options={"preset": "8", "crf": "25"})
    add(
        "h264_rotated.mp4",
        "libx264",
        num_frames,
        rotation=90,
        options={"x264-params": x264, "crf": "20"},
    )
    add(  # 90° and a left-right mirror: frame.rotation alone reads this as a plain 90°
        "h264_mirrored.mp4",
        "libx264",
        num_frames,
        rotation=90,
        hflip=True,
        options={"x264-params": x264, "crf": "20"},
    )
    add("h264_damaged.mp4", "libx264", num_frames, options={"x264-params": x264, "crf": "20"})
    data = bytearray(out["h264_damaged.mp4"].path.read_bytes())
    middle, width = len(data) // 2, max(64, len(data) // 20)  # 5% of the file, mid-file
    data[middle : middle + width] = np.random.default_rng(0).integers(0, 256, width, dtype=np.uint8).tobytes()
    out["h264_damaged.mp4"].path.write_bytes(bytes(data))
    out["h264_damaged.mp4"].damaged = True
    return out
