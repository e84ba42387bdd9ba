"""Index reading (OpenVid CSV, JSONL, bad rows) and videos read straight from zip parts."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tsm_video.data import read_frames, read_index
from tsm_video.data.zipstore import ZipStore, group_zip_parts


def test_group_zip_parts(zip_parts):
    groups = group_zip_parts([zip_parts])
    names = [[p.name for p in g] for g in groups]
    assert names == [["OpenVid_part1.zip"], ["OpenVid_part2_partaa", "OpenVid_part2_partab"]]


def test_members_read_by_offset_stored_deflated_and_split(zip_parts, video_dir, tmp_path):
    store = ZipStore([zip_parts], cache_dir=tmp_path)
    methods = {}
    for part in [zip_parts / "OpenVid_part1.zip"]:
        with zipfile.ZipFile(part) as z:
            methods.update({i.filename.rsplit("/", 1)[-1]: i.compress_type for i in z.infolist()})
    assert methods["good_0.mp4"] == zipfile.ZIP_STORED and methods["good_1.mp4"] == zipfile.ZIP_DEFLATED
    for i in range(6):  # part1 (stored, deflated); split part2 (a member spans the cut)
        name = f"good_{i}.mp4"
        assert store.read(name) == (video_dir / name).read_bytes()
    assert store.read("OpenVid_part1/good_0.mp4") == (video_dir / "good_0.mp4").read_bytes()
    with pytest.raises(KeyError):
        store.read("absent.mp4")


def test_member_table_is_cached(zip_parts, tmp_path, monkeypatch):
    ZipStore([zip_parts], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2

    def no_zipfile(*args, **kwargs):
        raise AssertionError("central directory re-read despite the cache")

    monkeypatch.setattr(zipfile, "ZipFile", no_zipfile)
    store = ZipStore([zip_parts], cache_dir=tmp_path)
    assert "good_5.mp4" in store


def test_damaged_member_raises_value_error(tmp_path, video_dir):
    part = tmp_path / "OpenVid_part9.zip"
    with zipfile.ZipFile(part, "w") as z:
        z.write(video_dir / "good_0.mp4", "a.mp4", compress_type=zipfile.ZIP_DEFLATED)
    store = ZipStore([part], cache_dir=tmp_path / "cache")
    data = bytearray(part.read_bytes())
    offset = store.members["a.mp4"].header_offset + 30 + len("a.mp4")
    data[offset : offset + 64] = b"\xff" * 64  # scramble the deflate stream (same size, same mtime skew ok)
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        ZipStore([part], cache_dir=tmp_path / "cache2").read("a.mp4")


def test_openvid_csv_from_folder_counts_bad_rows(video_dir, tmp_path):
    csv_path = tmp_path / "OpenVid-1M.csv"
    rows = (video_dir / "index.csv").read_text().splitlines()
    rows += [
        "good_0.mp4,,5,3,0.9,static,40,24,1.6",  # empty caption
        "good_0.mp4,x,5,3,0.9,static,forty,24,1.6",  # bad number
        "good_0.mp4,x,5,3,0.9,static,40,-24,1.6",  # non-positive fps
        "good_0.mp4,only three,fields",  # malformed
        'good_0.mp4,"a, quoted caption",5,3,0.9,static,40,24,1.6,extra',  # too many fields
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    index = read_index(csv_path, video_dir)
    assert len(index) == 14
    assert dict(index.skipped) == {"empty_path_or_caption": 1, "bad_number": 2, "malformed_row": 2}
    first = index[0]
    assert first.id == "good_0.mp4" and first.caption == "clip good_0.mp4"
    assert first.fps == 24.0 and first.num_frames == 40
    assert first.meta["aesthetic score"] == "5.0" and first.meta["camera motion"] == "static"
    assert first.load() == str(video_dir / "good_0.mp4")


def test_index_over_zip_parts(video_dir, zip_parts, tmp_path, frame_ids):
    index = read_index(video_dir / "index.csv", zip_parts, zip_cache_dir=tmp_path)
    # rows absent from the archives stay records (as in folder mode), failing only when loaded
    with_folder = read_index(video_dir / "index.csv", video_dir)
    assert [r.id for r in index] == [r.id for r in with_folder] and index.absent == 7
    assert sorted(r.id for r in index if r.id in r.store) == ["corrupt.mp4"] + [
        f"good_{i}.mp4" for i in range(6)
    ]
    record = next(r for r in index if r.id == "good_3.mp4")
    frames, _ = read_frames(record.load(), [0, 40])
    assert frame_ids(frames) == [0, 40]


def test_jsonl_with_custom_columns(video_dir, tmp_path):
    path = tmp_path / "index.jsonl"
    lines = [json.dumps({"file": "good_1.mp4", "text": "a clip"}), "{not json", json.dumps([1, 2])]
    path.write_text("\n".join(lines) + "\n")
    index = read_index(path, video_dir, path_column="file", caption_column="text")
    assert [r.caption for r in index] == ["a clip"] and index.skipped["malformed_row"] == 2
    assert index[0].fps is None
    with pytest.raises(KeyError, match="no column"):
        read_index(path, video_dir)


def test_zip_parts_stream_through_forked_workers(video_dir, zip_parts, tmp_path, frame_ids):
    from tsm_video.data import StreamLoader, VideoClipDataset

    index = read_index(video_dir / "index.csv", zip_parts, zip_cache_dir=tmp_path)
    index[0].store.read("good_0.mp4")  # handles opened in the parent before the workers fork
    ds = VideoClipDataset(index, num_frames=4, frame_stride=3, size=None, train=False)
    batches = list(StreamLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork"))
    assert sorted(i for b in batches for i in b["id"]) == [f"good_{i}.mp4" for i in range(6)]
    # corrupt.mp4 is a deflated member that is not a video; 7 rows name videos absent from the zips
    assert ds.skipped == {"unreadable": 1, "missing": 7}
    for b in batches:
        frames = ((b["pixels"][0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # t h w c
        assert np.diff(frame_ids(frames)).tolist() == [3, 3, 3]
