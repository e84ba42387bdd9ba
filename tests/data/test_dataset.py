"""Streaming dataset: exact epoch coverage across ranks × workers, resume, skips, clip content."""

from __future__ import annotations

import itertools
import platform
import subprocess
import sys
from collections import Counter

import pytest
import torch

from tsm_video.data import StreamLoader, VideoClipDataset, read_index
from tsm_video.data.clips import ClipSampler
from tsm_video.data.dataset import load_clip
from tsm_video.data.stream import collate, resolve_rank, shard_order
from tsm_video.data.video_io import count_packets

GOOD = {f"good_{i}.mp4" for i in range(10)}


def _dataset(video_dir, **kwargs) -> VideoClipDataset:
    kwargs = {"num_frames": 4, "frame_stride": 2, "size": (16, 24), "shuffle_buffer": 3, **kwargs}
    return VideoClipDataset(read_index(video_dir / "index.csv", video_dir), **kwargs)


def _ids(loader) -> list[str]:
    return [i for batch in loader for i in batch["id"]]


def test_shard_order_partitions_every_epoch():
    for epoch in range(3):
        shards = [list(shard_order(23, epoch, s, 4, seed=5, shuffle=True, buffer_size=4)) for s in range(4)]
        assert sorted(itertools.chain(*shards)) == list(range(23))
    a = list(shard_order(23, 0, 1, 4, 5, True, 4))
    assert a == list(shard_order(23, 0, 1, 4, 5, True, 4)) and a != list(shard_order(23, 1, 1, 4, 5, True, 4))
    assert list(shard_order(10, 0, 1, 3, 5, shuffle=False, buffer_size=4)) == [1, 4, 7]


def test_two_ranks_two_workers_cover_an_epoch_exactly_once(video_dir):
    seen, skipped = [], Counter()
    for rank in range(2):
        ds = _dataset(video_dir, rank=rank, world_size=2, seed=7)
        seen += _ids(StreamLoader(ds, batch_size=2, num_workers=2))
        skipped += ds.skipped
        assert ds.epoch == 1 and ds.taken == {}
    # every usable video once; the truncated one still yields a clip from the frames it has
    assert sorted(seen) == sorted(GOOD | {"truncated.mp4"})
    assert skipped == Counter({"missing": 1, "unreadable": 1, "too_short": 1})


def test_epochs_reshuffle_and_seed_fixes_order(video_dir):
    order = [_ids(StreamLoader(_dataset(video_dir, seed=s), batch_size=1)) for s in (1, 1, 2)]
    assert order[0] == order[1] and order[0] != order[2]
    ds = _dataset(video_dir, seed=1)
    loader = StreamLoader(ds, batch_size=1)
    first, second = _ids(loader), _ids(loader)
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_the_same_order(video_dir, num_workers):
    full_ds = _dataset(video_dir, seed=3)
    full = [b for b in StreamLoader(full_ds, batch_size=2, num_workers=num_workers)]
    ds = _dataset(video_dir, seed=3)
    loader = StreamLoader(ds, batch_size=2, num_workers=num_workers)
    consumed = list(itertools.islice(iter(loader), 2))  # the loader prefetches more than this
    state = ds.state_dict()
    resumed = _dataset(video_dir, seed=3)
    resumed.load_state_dict(state)
    rest = list(StreamLoader(resumed, batch_size=2, num_workers=num_workers))
    assert [b["id"] for b in consumed + rest] == [b["id"] for b in full]
    for a, b in zip(consumed + rest, full):  # same clips, same starts
        torch.testing.assert_close(a["pixels"], b["pixels"])
    assert resumed.epoch == 1


def test_worker_batches_carry_uint8_and_arrive_as_the_in_process_floats(video_dir):
    ds = _dataset(video_dir, train=False)
    direct = {s["id"]: s["pixels"] for s in ds}
    assert all(p.dtype == torch.float32 for p in direct.values())
    batches = list(StreamLoader(_dataset(video_dir, train=False), batch_size=1, num_workers=1))
    assert {b["id"][0] for b in batches} == set(direct)
    for batch in batches:  # x / 127.5 - 1 in the trainer's process: the same floats, bit for bit
        assert batch["pixels"].dtype == torch.float32
        assert torch.equal(batch["pixels"][0], direct[batch["id"][0]])
    raw = next(iter(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate)))
    assert raw["pixels"].dtype == torch.uint8  # what crossed between the processes


_FRAGMENT = """
import sys
import numpy as np
from tsm_video.data.stream import release_large_blocks
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 2**10
if sys.argv[1] == "pinned":
    assert release_large_blocks()
big = np.ones(16 << 20, np.uint8); del big  # glibc's dynamic mmap threshold rises to 16 MB
before = rss()
blocks = [np.ones(2 << 20, np.uint8) for _ in range(40)]  # 80 MB of frame-sized blocks
keep = blocks[-1]; del blocks  # freed, but the last one pins the heap's top
print(rss() - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc")
def test_loader_workers_return_freed_frame_buffers_to_the_system():
    def held(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FRAGMENT, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return float(out.stdout)

    # default glibc: the 39 freed 2 MB blocks stay resident; pinned threshold: only the kept one
    assert held("default") > 60 and held("pinned") < 10


def test_resume_with_other_worker_count_is_refused(video_dir):
    ds = _dataset(video_dir, seed=3)
    next(iter(StreamLoader(ds, batch_size=2, num_workers=2)))
    resumed = _dataset(video_dir, seed=3)
    resumed.load_state_dict(ds.state_dict())
    with pytest.raises(ValueError, match="same world size and num_workers"):
        next(iter(StreamLoader(resumed, batch_size=2, num_workers=0)))
    with pytest.raises(ValueError, match="seed"):
        _dataset(video_dir, seed=4).load_state_dict(ds.state_dict())


def test_sample_content_and_validation_is_deterministic(video_dir, frame_ids):
    ds = _dataset(video_dir, train=False, frame_stride=None, target_fps=12.0, size=(20, 30))
    samples = {s["id"]: s for s in ds}
    again = {s["id"]: s for s in ds}
    sample = samples["good_0.mp4"]  # 40 frames at 30 fps: stride round(30/12)=2 (ties to even), 15 fps
    assert sample["fps"] == pytest.approx(15.0, rel=1e-6) and sample["caption"] == "clip good_0.mp4"
    assert sample["pixels"].shape == (3, 4, 20, 30) and sample["pixels"].dtype == torch.float32
    assert sample["pixels"].min() >= -1.0 and sample["pixels"].max() <= 1.0
    assert samples["good_1.mp4"]["fps"] == pytest.approx(12.0, rel=1e-6)  # 24 fps, stride 2; float32
    frames = ((sample["pixels"].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # t h w c
    assert frame_ids(frames) == [16, 18, 20, 22]  # centred: span 7 in 40 frames, slack 33 → start 16
    torch.testing.assert_close(again["good_0.mp4"]["pixels"], sample["pixels"])


def test_over_reported_frame_count_plans_inside_present_frames(video_dir, frame_ids):
    path = str(video_dir / "truncated.mp4")  # header: 50 frames; far fewer present
    present = count_packets(path)
    sampler = ClipSampler(4, frame_stride=2)  # span 7, centred in the frames present, not the 50 claimed
    frames, fps = load_clip(path, sampler, None)
    start = (present - 7) // 2
    assert frame_ids(frames) == [start, start + 2, start + 4, start + 6] and present < 33


def test_rank_resolution(monkeypatch):
    from accelerate import PartialState

    monkeypatch.setattr(PartialState, "_shared_state", {})  # as if no Accelerator existed yet
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (3, 4)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    PartialState(cpu=True)  # an initialised accelerate state wins over the environment
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (0, 1)
    assert resolve_rank(rank=1, world_size=2) == (1, 2)
    with pytest.raises(ValueError):
        resolve_rank(rank=2, world_size=2)


def test_construction_does_no_io(tmp_path):
    from tsm_video.data.index import VideoRecord

    records = [VideoRecord(f"v{i}", "c", str(tmp_path / f"absent{i}.mp4")) for i in range(10_000)]
    ds = VideoClipDataset(records, seed=0)
    assert len(ds) == 10_000 and not ds.skipped


def test_drop_last_yields_only_full_batches(video_dir):
    ds = _dataset(video_dir, seed=5, rank=0, world_size=1)
    batches = list(StreamLoader(ds, batch_size=3, num_workers=2, drop_last=True))
    assert batches and all(len(b["id"]) == 3 and b["pixels"].shape[0] == 3 for b in batches)
    assert sum(ds.skipped.values()) == 3  # the skips still reach the counter, markers or not
