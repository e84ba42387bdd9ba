"""Atomic writes: whole file or nothing, ordinary permissions, the old file kept on failure."""

import os
import stat

import pytest

from tsm_video.fileio import atomic_path, atomic_write_bytes, atomic_write_text


def test_written_file_has_umask_permissions_not_mkstemps(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import tsm_video.fileio as fileio

        importlib.reload(fileio)  # the mode is read at import: re-read it under this umask
        path = fileio.atomic_write_text(tmp_path / "sub" / "a.yaml", "x: 1\n")
    finally:
        os.umask(old)
        importlib.reload(fileio)
    assert path.read_text() == "x: 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would leave 0o600


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = atomic_write_bytes(tmp_path / "adapter.safetensors", b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors"]


def test_temp_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "clip.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path and not tmp.name.startswith("clip")
        tmp.write_bytes(b"\x93NUMPY")
    assert (tmp_path / "clip.npy").read_bytes() == b"\x93NUMPY"
    assert atomic_write_text(tmp_path / "t.txt", "é").read_bytes() == "é".encode()
