"""Read videos straight out of OpenVid-1M's zip parts, without extracting them.

OpenVid ships ``OpenVid_partN.zip`` archives; the largest parts ship as halves
(``OpenVid_partN_partaa``, ``OpenVid_partN_partab``) that form one zip when concatenated.
:class:`ZipStore` treats each group of halves as one virtual file, reads every central
directory once (``zipfile`` parses zip64 too) and caches the member table as JSON, keyed by the
parts' names, sizes and mtimes. Reading a member is one seek to its local header plus one read
of its compressed bytes; stored members come back as they are, deflated ones are inflated in
memory. Decoders then read the member from memory: decord copies any file-like input into a
buffer anyway, and a compressed clip is a few MB, far below its decoded frames.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tsm_video.fileio import atomic_write_text

__all__ = ["ZipMember", "ZipStore", "group_zip_parts"]

_SPLIT = re.compile(r"^(?P<stem>.+?)(?:\.zip)?_part(?P<half>[a-z]{2})$")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes


@dataclass(frozen=True)
class ZipMember:
    """Where one member's bytes live: archive group, local-header offset, sizes, method."""

    archive: int
    header_offset: int
    compress_size: int
    file_size: int
    method: int


class _ConcatFile(io.RawIOBase):
    """Read-only seekable view of several files back to back (a split zip's halves)."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._sizes = [p.stat().st_size for p in paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(paths))]
        self._size = sum(self._sizes)
        self._pos = 0
        self._handles: dict[int, io.BufferedReader] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            part = max(i for i, s in enumerate(self._starts) if s <= self._pos)
            handle = self._handles.get(part)
            if handle is None:
                handle = self._handles[part] = open(self._paths[part], "rb")  # noqa: SIM115
            handle.seek(self._pos - self._starts[part])
            left_in_part = self._starts[part] + self._sizes[part] - self._pos
            n = handle.readinto(view[done : done + min(len(view) - done, left_in_part)])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


def group_zip_parts(paths: list[str | os.PathLike]) -> list[list[Path]]:
    """Group archive files: ``X.zip`` alone; ``X_partaa``, ``X_partab``, ... together, in order.

    A directory expands to the zip files and split halves inside it.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix == ".zip" or _SPLIT.match(f.name))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"zip part {p} does not exist")
    singles = [[f] for f in files if not _SPLIT.match(f.name)]
    halves: dict[str, list[Path]] = {}
    for f in files:
        m = _SPLIT.match(f.name)
        if m:
            halves.setdefault(str(f.parent / m["stem"]), []).append(f)
    groups = singles + [sorted(v, key=lambda f: f.name) for _, v in sorted(halves.items())]
    if not groups:
        raise FileNotFoundError(f"no zip parts found in {[str(p) for p in paths]}")
    return groups


class ZipStore:
    """Member table over a set of zip parts; ``read(name)`` returns a member's bytes.

    ``name`` is the member's path inside its archive or, when unique, its base name (OpenVid's
    CSV names videos by file name). ``cache_dir`` holds the JSON member table (default
    ``~/.cache/tsm_video/zip_index``); it is rebuilt when a part's size or mtime changes.
    Picklable and fork-safe: file handles are per process, opened lazily.
    """

    def __init__(self, parts: list[str | os.PathLike], cache_dir: str | os.PathLike | None = None) -> None:
        self.groups = group_zip_parts(parts)
        cache_dir = Path(cache_dir or Path.home() / ".cache" / "tsm_video" / "zip_index")
        self.members: dict[str, ZipMember] = {}
        ambiguous: set[str] = set()
        for archive, group in enumerate(self.groups):
            for name, member in self._member_table(group, cache_dir).items():
                member = ZipMember(archive, *member)
                self.members[name] = member
                base = name.rsplit("/", 1)[-1]
                if base != name:
                    if base in self.members and self.members[base] != member:
                        ambiguous.add(base)
                    self.members[base] = member
        for base in ambiguous:
            del self.members[base]
        self._files: dict[int, io.RawIOBase] = {}
        self._pid = os.getpid()

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def __getstate__(self) -> dict:
        return {"groups": self.groups, "members": self.members}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._files, self._pid = {}, os.getpid()

    @staticmethod
    def _member_table(group: list[Path], cache_dir: Path) -> dict[str, tuple[int, int, int, int]]:
        stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in group]
        key = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:16]
        cache = cache_dir / f"{group[0].name}.{key}.json"
        if cache.exists():
            return {k: tuple(v) for k, v in json.loads(cache.read_text()).items()}
        with _ConcatFile(group) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 16)) as archive:
            table = {
                info.filename: (info.header_offset, info.compress_size, info.file_size, info.compress_type)
                for info in archive.infolist()
                if not info.is_dir()
            }
        for name, (_, _, _, method) in table.items():
            if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"{group[0]}: member {name} uses unsupported compression {method}")
        atomic_write_text(cache, json.dumps(table))
        return table

    def read(self, name: str) -> bytes:
        """The member's uncompressed bytes. KeyError if absent, ValueError if damaged."""
        member = self.members[name]
        if self._pid != os.getpid():  # a forked worker: never share file offsets with the parent
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(member.archive)
        if f is None:
            f = self._files[member.archive] = _ConcatFile(self.groups[member.archive])
        f.seek(member.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise ValueError(f"bad local header for zip member {name}")
        name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
        f.seek(member.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        data = f.read(member.compress_size)
        if len(data) != member.compress_size:
            raise ValueError(f"zip member {name} is truncated ({len(data)}/{member.compress_size} bytes)")
        if member.method == zipfile.ZIP_DEFLATED:
            try:
                data = zlib.decompressobj(-15).decompress(data)
            except zlib.error as err:
                raise ValueError(f"zip member {name} does not inflate: {err}") from err
        if len(data) != member.file_size:
            raise ValueError(f"zip member {name}: {len(data)} bytes, expected {member.file_size}")
        return data
