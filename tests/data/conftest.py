"""Videos made by the tests: frame ``i`` is grey ``16 + 4 i`` (+ noise), so decoded frames name themselves."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from video_corpus import CorpusFile, build_corpus

from tsm_video.data.index import OPENVID_COLUMNS
from tsm_video.data.video_io import write_mp4


def _frame_ids(frames: np.ndarray) -> list[int]:
    """Frame indices read back from (T, H, W, 3) uint8 frames made by :func:`make_frames`."""
    return [int(round((f.astype(np.float64).mean() - 16) / 4)) for f in frames]


def make_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: frame i is grey 16 + 4 i plus fresh ±8 noise (packets of similar size)."""
    assert 16 + 4 * (num_frames - 1) <= 247
    values = 16 + 4 * np.arange(num_frames)
    noise = np.random.default_rng(num_frames).integers(-8, 9, (num_frames, height, width, 1))
    return np.repeat(values[:, None, None, None] + noise, 3, axis=-1).astype(np.uint8)


def _make_video(
    path: Path,
    num_frames: int = 40,
    size: tuple[int, int] = (36, 64),
    fps: float = 24.0,
    gop: int | None = 12,
) -> Path:
    return write_mp4(path, make_frames(num_frames, *size), fps, keyframe_interval=gop)


@pytest.fixture(scope="session")
def frame_ids():
    """Function: decoded frames → the indices they were made with."""
    return _frame_ids


@pytest.fixture(scope="session")
def make_video():
    """Function: (path, num_frames, size, fps, gop) → an h264 mp4 of numbered grey frames."""
    return _make_video


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Good and bad videos plus an OpenVid-format CSV naming them (and one missing file)."""
    root = tmp_path_factory.mktemp("videos")
    good = {f"good_{i}.mp4": (40 + 2 * i, 24.0 if i % 2 else 30.0) for i in range(10)}
    for name, (frames, fps) in good.items():
        _make_video(root / name, frames, fps=fps)
    _make_video(root / "short.mp4", 5)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    whole = _make_video(root / "whole.mp4", 50).read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "whole.mp4").unlink()
    names = [*good, "short.mp4", "corrupt.mp4", "truncated.mp4", "missing.mp4"]
    lines = [",".join(OPENVID_COLUMNS)]
    lines += [f"{n},clip {n},5.0,3.0,0.95,static,40,24,1.6" for n in names]
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def zip_parts(tmp_path_factory, video_dir) -> Path:
    """A folder with OpenVid_part1.zip (stored + deflated members) and a split part2 (_partaa/_partab)."""
    root = tmp_path_factory.mktemp("zips")
    with zipfile.ZipFile(root / "OpenVid_part1.zip", "w") as z:
        z.write(video_dir / "good_0.mp4", "OpenVid_part1/good_0.mp4", compress_type=zipfile.ZIP_STORED)
        z.write(video_dir / "good_1.mp4", "OpenVid_part1/good_1.mp4", compress_type=zipfile.ZIP_DEFLATED)
        z.write(video_dir / "corrupt.mp4", "OpenVid_part1/corrupt.mp4", compress_type=zipfile.ZIP_DEFLATED)
    whole = root / "part2.zip"
    with zipfile.ZipFile(whole, "w") as z:
        for i in range(2, 6):
            z.write(
                video_dir / f"good_{i}.mp4",
                f"good_{i}.mp4",
                compress_type=zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED,
            )
    data = whole.read_bytes()
    cut = len(data) // 2  # cut mid-member: the halves only make sense together
    (root / "OpenVid_part2_partaa").write_bytes(data[:cut])
    (root / "OpenVid_part2_partab").write_bytes(data[cut:])
    whole.unlink()
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, CorpusFile]:
    """The barcoded corpus of tests/data/video_corpus.py (h264 open GOP, MPEG-4 B-frames in
    mp4/avi, VP9, AV1, VFR, rotated, rotated + mirrored, damaged), ~1 s to write."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))
