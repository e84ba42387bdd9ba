"""The training stream of a run config: videos (decoded on the fly), images, or a latent/text cache."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tsm_video.config import RunConfig
from tsm_video.data import StreamLoader, VideoClipDataset, read_index
from tsm_video.data.images import ImageCaptionDataset, read_image_index
from tsm_video.data.latent_cache import LatentCacheDataset
from tsm_video.data.stream import ShardedStream

__all__ = ["COND_EXTRAS", "build_stream", "forever"]

#: Batch keys passed to ``Backbone.predict`` as conditioning extras when a batch has them
#: (video clips carry ``fps``, VC2's frame-rate conditioning).
COND_EXTRAS = ("fps",)


def build_stream(cfg: RunConfig, rank: int, world_size: int) -> tuple[ShardedStream, StreamLoader]:
    """This rank's shard of the training data and its loader (per-device batches, full batches only).

    Both ranks use ``run.seed`` for the order, so their shards are disjoint and cover the data.
    """
    d = cfg.data
    if d.source == "videos":
        records = read_index(
            d.csv, videos=d.videos, path_column=d.path_column, caption_column=d.caption_column
        )
        if len(records) == 0:
            raise ValueError(f"data.csv {d.csv}: no usable rows (skipped: {dict(records.skipped)})")
        dataset = VideoClipDataset(
            records,
            num_frames=d.num_frames,
            frame_stride=d.frame_stride,
            target_fps=d.target_fps,
            size=(d.height, d.width),
            train=True,
            seed=cfg.run.seed,
            rank=rank,
            world_size=world_size,
        )
    elif d.source == "images":
        index = read_image_index(d.images, path_column=d.path_column, caption_column=d.caption_column)
        if len(index) == 0:
            raise ValueError(f"data.images {d.images}: no usable images (skipped: {dict(index.skipped)})")
        dataset = ImageCaptionDataset(
            index.records,
            size=(d.height, d.width),
            crop=d.crop,
            train=True,
            seed=cfg.run.seed,
            rank=rank,
            world_size=world_size,
        )
    else:
        dataset = LatentCacheDataset(
            d.cache_dir, train=True, seed=cfg.run.seed, rank=rank, world_size=world_size
        )
    # The loader's own generator: creating an iterator must not draw from the global torch RNG,
    # which the model's dropout (VC2's temporal convs) uses and a resumed run restores exactly.
    loader = StreamLoader(
        dataset,
        batch_size=cfg.train.per_device_batch_size,
        num_workers=d.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )
    return dataset, loader


def forever(loader: StreamLoader) -> Iterator[dict]:
    """Epoch after epoch; an epoch that yields no batch is an error (all clips skipped or too few)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError(
                f"the training stream yielded no full batch in an epoch "
                f"(skipped: {dict(loader.dataset.skipped)}); check the data and the batch size"
            )
