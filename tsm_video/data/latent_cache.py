"""Precomputed VAE latents and text embeddings, written once and streamed instead of videos.

Layout of a cache folder: ``r{rank}-{n:05d}.safetensors`` shards (tensors ``latents``
(N, 4, T, h, w) and ``context`` (N, L, D)), one ``index-r{rank}.json`` per writing rank (rows:
shard file, row, id, caption, effective fps) and ``uncond.safetensors`` (the empty prompt's
embedding, ``context`` (L, D), for caption dropout). Several ranks may write one folder; the
reader merges every index file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tsm_video.data.stream import ShardedStream, SkipSample, StreamLoader
from tsm_video.fileio import atomic_path, atomic_write_text

__all__ = ["VideoEncoder", "write_latent_cache", "LatentCacheDataset", "read_uncond"]

_VERSION = 1


class VideoEncoder(Protocol):
    """What caching needs from a backbone (part of ``tsm_video.models.Backbone``)."""

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor: ...  # (B,3,T,H,W) → (B,4,T,h,w)

    def encode_text(self, prompts: list[str]) -> torch.Tensor: ...  # → (B, L, D)


def _save_atomic(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


@torch.no_grad()
def write_latent_cache(
    model: VideoEncoder,
    batches: Iterable[dict] | ShardedStream,
    out_dir: str | os.PathLike,
    shard_size: int = 256,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    batch_size: int = 4,
    num_workers: int = 0,
    rank: int = 0,
) -> Path:
    """Encode clips and captions into a cache folder; returns this rank's index file.

    ``batches``: a :class:`ShardedStream` of clips (iterated for one epoch with ``batch_size``
    and ``num_workers``), or any iterable of batches ``{"pixels": (B,3,T,H,W), "caption":
    [str], "fps": (B,), "id": [str]}``. Tensors are stored in ``dtype``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(batches, ShardedStream):
        rank = batches.rank
        batches = StreamLoader(batches, batch_size=batch_size, num_workers=num_workers)
    uncond = model.encode_text([""])[0]
    _save_atomic({"context": uncond.to(dtype).cpu()}, out_dir / "uncond.safetensors")
    rows: list[list] = []
    pending: dict[str, list] = {"latents": [], "context": []}
    shard_count = 0

    def flush() -> None:
        nonlocal shard_count
        name = f"r{rank}-{shard_count:05d}.safetensors"
        _save_atomic({k: torch.cat(v) for k, v in pending.items()}, out_dir / name)
        pending["latents"], pending["context"] = [], []
        shard_count += 1

    for batch in batches:
        latents = model.encode_pixels(batch["pixels"].to(device)).to(dtype).cpu()  # (B, 4, T, h, w)
        context = model.encode_text(list(batch["caption"])).to(dtype).cpu()  # (B, L, D)
        fps = torch.as_tensor(batch["fps"]).tolist()
        for i in range(latents.shape[0]):
            pending["latents"].append(latents[i : i + 1])
            pending["context"].append(context[i : i + 1])
            rows.append(
                [
                    f"r{rank}-{shard_count:05d}.safetensors",
                    len(pending["latents"]) - 1,
                    batch["id"][i],
                    batch["caption"][i],
                    float(fps[i]),
                ]
            )
            if len(pending["latents"]) == shard_size:
                flush()
    if pending["latents"]:
        flush()
    index = out_dir / f"index-r{rank}.json"
    atomic_write_text(index, json.dumps({"version": _VERSION, "dtype": str(dtype), "rows": rows}))
    return index


def read_uncond(cache_dir: str | os.PathLike) -> torch.Tensor:
    """The empty prompt's embedding (L, D), float32."""
    with safe_open(str(Path(cache_dir) / "uncond.safetensors"), "pt") as f:
        return f.get_tensor("context").float()


class LatentCacheDataset(ShardedStream):
    """Streams a latent cache with the sharding, shuffle and resume semantics of the video stream.

    Yields ``{"latents": (4, T, h, w) float32, "context": (L, D) float32, "fps": float,
    "caption": str, "id": str}`` (+ stream bookkeeping keys).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        train: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            train=train, seed=seed, shuffle_buffer=shuffle_buffer, rank=rank, world_size=world_size
        )
        self.cache_dir = Path(cache_dir)
        indices = sorted(self.cache_dir.glob("index-r*.json"))
        if not indices:
            raise FileNotFoundError(
                f"{self.cache_dir} holds no latent cache (no index-r*.json); "
                "write one with `tsm-video data cache`"
            )
        self.rows: list[list] = []
        for path in indices:
            index = json.loads(path.read_text())
            if index.get("version") != _VERSION:
                raise ValueError(f"{path}: cache version {index.get('version')}, expected {_VERSION}")
            self.rows += index["rows"]
        self._files: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, index: int, rng: np.random.Generator | None) -> dict:
        shard, row, video_id, caption, fps = self.rows[index]
        try:
            f = self._files.get(shard)
            if f is None:
                f = self._files[shard] = safe_open(str(self.cache_dir / shard), "pt")
            latents = f.get_slice("latents")[row : row + 1][0].float()  # (4, T, h, w)
            context = f.get_slice("context")[row : row + 1][0].float()  # (L, D)
        except (OSError, RuntimeError, KeyError) as err:
            raise SkipSample("cache_damaged", f"{shard}[{row}]: {err}") from err
        return {"latents": latents, "context": context, "fps": float(fps), "caption": caption, "id": video_id}
