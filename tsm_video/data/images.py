"""Image–caption data for the image backbones: index, then a sharded resumable stream.

Three layouts (:func:`read_image_index` tells them apart):

- an image folder with ``metadata.jsonl`` (the diffusers / 🤗 ``imagefolder`` convention: one
  JSON object per line with ``file_name`` relative to the folder and ``text``);
- a CSV with a path column (relative to the CSV's folder, or absolute) and a caption column;
- webdataset-style tar shards (a folder of ``*.tar`` or a list of ``.tar`` paths): members
  ``<key>.jpg|jpeg|png|webp`` and ``<key>.txt`` form one sample. Only the tar headers are read to
  index a shard; an image is read from its byte offset when its sample is drawn.

:class:`ImageCaptionDataset` streams them through :class:`~tsm_video.data.stream.ShardedStream`
(sharded by rank × worker, resumable, skips counted by reason): the short side is resized to
cover ``height × width`` and the image is cropped (centre, or a random window per (seed, epoch,
item) in training with ``crop="random"``). Unreadable images are skipped and counted
(``unreadable``), as are missing files (``missing``).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tsm_video.data.stream import ShardedStream, SkipSample
from tsm_video.errors import TSMVideoError

__all__ = [
    "ImageRecord",
    "ImageIndex",
    "ImageDataError",
    "read_image_index",
    "ImageCaptionDataset",
    "resize_crop_image",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class ImageDataError(TSMVideoError, ValueError):
    """Image data that cannot be indexed at all (missing folder, no metadata, bad CSV header)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image–caption pair: a file, or ``size`` bytes at ``offset`` inside the tar ``path``."""

    id: str
    caption: str
    path: Path
    offset: int | None = None
    size: int | None = None

    def read_bytes(self) -> bytes:
        if self.offset is None:
            return self.path.read_bytes()
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


@dataclass
class ImageIndex:
    records: list[ImageRecord]
    skipped: Counter  # rows dropped while indexing, by reason

    def __len__(self) -> int:
        return len(self.records)


def _from_metadata(folder: Path) -> ImageIndex:
    records, skipped = [], Counter()
    for n, line in enumerate((folder / "metadata.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            skipped["bad_row"] += 1
            continue
        records.append(ImageRecord(f"{folder.name}/{name}#{n}", str(text), folder / name))
    return ImageIndex(records, skipped)


def _from_csv(path: Path, path_column: str, caption_column: str) -> ImageIndex:
    records, skipped = [], Counter()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (path_column, caption_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise ImageDataError(
                f"{path}: no column(s) {missing}; columns are {reader.fieldnames} "
                "(set data.path_column / data.caption_column)"
            )
        for row in reader:
            name, text = row.get(path_column), row.get(caption_column)
            if not name or text is None:
                skipped["bad_row"] += 1
                continue
            file = Path(name) if Path(name).is_absolute() else path.parent / name
            records.append(ImageRecord(name, text, file))
    return ImageIndex(records, skipped)


def _from_shards(shards: list[Path]) -> ImageIndex:
    records, skipped = [], Counter()
    for shard in shards:
        images: dict[str, tarfile.TarInfo] = {}
        texts: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(shard, "r:") as tar:  # headers only: the data is skipped by seeking
                for member in tar:
                    if not member.isfile():
                        continue
                    key, dot, ext = member.name.rpartition(".")
                    if dot and "." + ext.lower() in IMAGE_SUFFIXES:
                        images[key] = member
                    elif dot and ext == "txt":
                        texts[key] = member
        except (tarfile.TarError, OSError):
            skipped["bad_shard"] += 1
            continue
        with open(shard, "rb") as f:
            for key in sorted(images):
                if key not in texts:
                    skipped["no_caption"] += 1
                    continue
                f.seek(texts[key].offset_data)
                caption = f.read(texts[key].size).decode("utf-8", errors="replace").strip()
                image = images[key]
                records.append(
                    ImageRecord(f"{shard.name}/{key}", caption, shard, image.offset_data, image.size)
                )
    return ImageIndex(records, skipped)


def read_image_index(
    source: str | Path | list[str | Path], path_column: str = "file_name", caption_column: str = "text"
) -> ImageIndex:
    """Index image–caption pairs: a folder with ``metadata.jsonl``, a ``.csv`` file, a folder of
    ``.tar`` shards, or a list of ``.tar`` shards (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        shards = [Path(s) for s in source]
        absent = [str(s) for s in shards if not s.is_file()]
        if absent:
            raise ImageDataError(f"tar shard(s) not found: {absent[:5]}")
        return _from_shards(shards)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_csv(path, path_column, caption_column)
    if path.is_file() and path.suffix.lower() == ".tar":
        return _from_shards([path])
    if path.is_dir():
        if (path / "metadata.jsonl").is_file():
            return _from_metadata(path)
        shards = sorted(path.glob("*.tar"))
        if shards:
            return _from_shards(shards)
        raise ImageDataError(f"{path}: neither metadata.jsonl (imagefolder) nor .tar shards inside")
    raise ImageDataError(
        f"image data not found: {path} (a folder with metadata.jsonl, a .csv, or .tar shards)"
    )


def resize_crop_image(
    image: Image.Image, size: tuple[int, int], rng: np.random.Generator | None = None
) -> np.ndarray:
    """RGB image → (h, w, 3) uint8: the short side resized to cover ``size`` (bicubic, as
    diffusers' training scripts), then a centre crop, or a random one with ``rng``."""
    h, w = size
    scale = max(h / image.height, w / image.width)
    new = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
    image = image.convert("RGB").resize(new, Image.Resampling.BICUBIC)
    dy, dx = new[1] - h, new[0] - w
    top, left = (dy // 2, dx // 2) if rng is None else (int(rng.integers(dy + 1)), int(rng.integers(dx + 1)))
    return np.asarray(image.crop((left, top, left + w, top + h)))


class ImageCaptionDataset(ShardedStream):
    """Images of an :class:`ImageIndex`, sharded by (rank, worker), resumable.

    Yields ``{"pixels": (3, H, W) float32 in [-1, 1], "caption": str, "id": str}`` plus the
    stream's bookkeeping keys. ``crop``: ``center`` or ``random`` (random only in training).
    Construction does no IO.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        size: tuple[int, int] = (512, 512),
        crop: str = "center",
        train: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        super().__init__(
            train=train, seed=seed, shuffle_buffer=shuffle_buffer, rank=rank, world_size=world_size
        )
        self.records, self.size, self.crop = records, (int(size[0]), int(size[1])), crop

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int, rng: np.random.Generator | None) -> dict:
        record = self.records[index]
        try:
            data = record.read_bytes()
        except OSError as err:
            raise SkipSample("missing", f"{record.id}: {err}") from err
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                pixels = resize_crop_image(image, self.size, rng if self.crop == "random" else None)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise SkipSample("unreadable", f"{record.id}: {err}") from err
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {"pixels": tensor, "caption": record.caption, "id": record.id}
