"""Data: video IO, OpenVid-1M index (folders or zip parts), clip sampling, streaming datasets."""

from tsm_video.data.clips import ClipSampler, resize_center_crop, to_model_pixels
from tsm_video.data.dataset import VideoClipDataset, load_clip
from tsm_video.data.index import OPENVID_COLUMNS, VideoIndex, VideoRecord, iter_rows, read_index
from tsm_video.data.latent_cache import LatentCacheDataset, read_uncond, write_latent_cache
from tsm_video.data.stream import ShardedStream, SkipSample, StreamLoader, collate, resolve_rank
from tsm_video.data.video_io import (
    VideoReadError,
    decode_clip,
    probe_video,
    read_frames,
    verify_decord,
    write_mp4,
)
from tsm_video.data.zipstore import ZipStore

__all__ = [
    "OPENVID_COLUMNS",
    "ClipSampler",
    "LatentCacheDataset",
    "ShardedStream",
    "SkipSample",
    "StreamLoader",
    "VideoClipDataset",
    "VideoIndex",
    "VideoReadError",
    "VideoRecord",
    "ZipStore",
    "collate",
    "decode_clip",
    "iter_rows",
    "load_clip",
    "probe_video",
    "read_frames",
    "read_index",
    "read_uncond",
    "resize_center_crop",
    "resolve_rank",
    "to_model_pixels",
    "verify_decord",
    "write_latent_cache",
    "write_mp4",
]
