"""Latent cache: write with an encoder, stream back with the video stream's sharding and resume."""

from __future__ import annotations

import itertools

import pytest
import torch

from tsm_video.data import StreamLoader, VideoClipDataset, read_index
from tsm_video.data.latent_cache import LatentCacheDataset, read_uncond, write_latent_cache


class FakeEncoder:
    """Deterministic stand-in for VC2Model's two encoders (same shapes, /8 spatially)."""

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool3d(pixels, (1, 8, 8))  # b 3 t h/8 w/8
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)  # b 4 t h/8 w/8

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([torch.arange(12.0).view(3, 4) + len(p) for p in prompts])  # b 3 4


@pytest.fixture(scope="module")
def cache(video_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    index = read_index(video_dir / "index.csv", video_dir)
    for rank in range(2):  # two ranks write one folder
        ds = VideoClipDataset(
            index, num_frames=4, frame_stride=2, size=(16, 24), train=False, rank=rank, world_size=2
        )
        write_latent_cache(
            FakeEncoder(), ds, out, shard_size=3, batch_size=2, num_workers=1 - rank, dtype=torch.float32
        )
    return out


def test_cache_round_trip(cache, video_dir):
    index = read_index(video_dir / "index.csv", video_dir)
    clips = {
        s["id"]: s for s in VideoClipDataset(index, num_frames=4, frame_stride=2, size=(16, 24), train=False)
    }
    ds = LatentCacheDataset(cache, train=False)
    assert len(ds) == len(clips) == 11
    assert sorted(p.name for p in cache.glob("index-*.json")) == ["index-r0.json", "index-r1.json"]
    for sample in ds:
        clip = clips[sample["id"]]
        expected = FakeEncoder().encode_pixels(clip["pixels"][None])[0]
        assert sample["latents"].shape == (4, 4, 2, 3)
        torch.testing.assert_close(sample["latents"], expected)
        torch.testing.assert_close(sample["context"], FakeEncoder().encode_text([clip["caption"]])[0])
        assert sample["fps"] == clip["fps"] and sample["caption"] == clip["caption"]
    torch.testing.assert_close(read_uncond(cache), torch.arange(12.0).view(3, 4))


def test_cache_stream_shards_and_resumes(cache):
    seen = []
    for rank in range(2):
        ds = LatentCacheDataset(cache, seed=2, shuffle_buffer=2, rank=rank, world_size=2)
        seen += [i for b in StreamLoader(ds, batch_size=2, num_workers=2) for i in b["id"]]
    assert len(seen) == len(set(seen)) == 11
    full = [b["id"] for b in StreamLoader(LatentCacheDataset(cache, seed=2), batch_size=2)]
    ds = LatentCacheDataset(cache, seed=2)
    head = [b["id"] for b in itertools.islice(iter(StreamLoader(ds, batch_size=2)), 2)]
    resumed = LatentCacheDataset(cache, seed=2)
    resumed.load_state_dict(ds.state_dict())
    assert head + [b["id"] for b in StreamLoader(resumed, batch_size=2)] == full


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tsm-video data cache"):
        LatentCacheDataset(tmp_path)
