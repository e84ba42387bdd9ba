"""Data: video IO, OpenVid-1M index (folders or zip parts), clip sampling, streaming datasets.

The names below are imported on first use (:mod:`tsm_video._lazy`), so ``import tsm_video.data``
costs nothing until a name is used."""

from tsm_video._lazy import lazy_exports

_EXPORTS = {
    "ClipSampler": "clips",
    "resize_center_crop": "clips",
    "to_model_pixels": "clips",
    "VideoClipDataset": "dataset",
    "load_clip": "dataset",
    "OPENVID_COLUMNS": "index",
    "VideoIndex": "index",
    "VideoRecord": "index",
    "iter_rows": "index",
    "read_index": "index",
    "LatentCacheDataset": "latent_cache",
    "read_uncond": "latent_cache",
    "write_latent_cache": "latent_cache",
    "ShardedStream": "stream",
    "SkipSample": "stream",
    "StreamLoader": "stream",
    "collate": "stream",
    "resolve_rank": "stream",
    "VideoReadError": "video_io",
    "decode_clip": "video_io",
    "probe_video": "video_io",
    "read_frames": "video_io",
    "verify_decord": "video_io",
    "write_mp4": "video_io",
    "ZipStore": "zipstore",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
