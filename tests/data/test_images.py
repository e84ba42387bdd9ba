"""Image–caption data: the three layouts index the same pairs, skips are counted, streams shard
by rank and resume exactly, resize/crop policy."""

from __future__ import annotations

import csv
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.shapes import make_shapes_dataset
from tsm_video.data.images import ImageCaptionDataset, ImageDataError, read_image_index, resize_crop_image
from tsm_video.data.stream import StreamLoader


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=10, size=32, seed=0)


def _rows(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_three_layouts_index_the_same_pairs(folder, tmp_path):
    rows = _rows(folder)
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        w.writerows([[str(folder / r["file_name"]), r["text"]] for r in rows])
    for k in range(2):  # two shards, 5 samples each
        with tarfile.open(tmp_path / f"{k:03d}.tar", "w") as tar:
            for r in rows[5 * k : 5 * k + 5]:
                key = r["file_name"].removesuffix(".png")
                tar.add(folder / r["file_name"], arcname=f"{key}.png")
                (tmp_path / "cap.txt").write_text(r["text"])
                tar.add(tmp_path / "cap.txt", arcname=f"{key}.txt")
    layouts = [
        read_image_index(folder),
        read_image_index(tmp_path / "data.csv", "path", "caption"),
        read_image_index(sorted(tmp_path.glob("*.tar"))),
    ]
    for index in layouts:
        assert [r.caption for r in index.records] == [r["text"] for r in rows]
        ds = ImageCaptionDataset(index.records, size=(32, 32), train=False, rank=0, world_size=1)
        first = next(iter(ds))
        expect = np.asarray(Image.open(folder / rows[0]["file_name"]).convert("RGB"))
        assert torch.equal(
            first["pixels"], torch.from_numpy(expect.copy()).permute(2, 0, 1).float() / 127.5 - 1
        )
    with pytest.raises(ImageDataError, match="no column"):
        read_image_index(tmp_path / "data.csv")
    with pytest.raises(ImageDataError, match="not found"):
        read_image_index(tmp_path / "nowhere")


def test_unreadable_and_missing_images_are_skipped_and_counted(folder, tmp_path):
    records = read_image_index(folder).records
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = [
        type(records[0])("bad", "x", tmp_path / "bad.png"),
        type(records[0])("gone", "x", tmp_path / "no.png"),
    ]
    ds = ImageCaptionDataset(records[:3] + bad, size=(16, 16), train=False, rank=0, world_size=1)
    loader = StreamLoader(ds, batch_size=1, num_workers=0)
    ids = []
    for batch in loader:
        ids += batch["id"]
    assert len(ids) == 3 and dict(ds.skipped) == {"unreadable": 1, "missing": 1}


def test_ranks_are_disjoint_and_resume_is_exact(folder):
    records = read_image_index(folder).records
    seen = []
    for rank in range(2):
        ds = ImageCaptionDataset(records, size=(16, 16), crop="random", seed=3, rank=rank, world_size=2)
        seen.append([s["id"] for s in ds])
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == len(records)
    full = ImageCaptionDataset(records, size=(16, 16), crop="random", seed=3, rank=0, world_size=1)
    loader = StreamLoader(full, batch_size=2, num_workers=0)
    batches = list(loader)
    resumed = ImageCaptionDataset(records, size=(16, 16), crop="random", seed=3, rank=0, world_size=1)
    first = StreamLoader(
        ImageCaptionDataset(records, size=(16, 16), crop="random", seed=3, rank=0, world_size=1),
        batch_size=2,
        num_workers=0,
    )
    it = iter(first)
    next(it)
    next(it)
    resumed.load_state_dict(first.dataset.state_dict())
    rest = list(StreamLoader(resumed, batch_size=2, num_workers=0))
    assert [b["id"] for b in rest] == [b["id"] for b in batches[2:]]
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(rest, batches[2:], strict=True))


def test_resize_crop_policy():
    image = Image.fromarray(np.arange(40 * 80 * 3, dtype=np.uint8).reshape(40, 80, 3) % 251)
    centre = resize_crop_image(image, (20, 20))  # short side 40 → 20, width 80 → 40, centre 20 columns
    expect = np.asarray(image.resize((40, 20), Image.Resampling.BICUBIC))[:, 10:30]
    assert centre.shape == (20, 20, 3) and np.array_equal(centre, expect)
    a = resize_crop_image(image, (20, 20), np.random.default_rng(0))
    b = resize_crop_image(image, (20, 20), np.random.default_rng(0))
    assert np.array_equal(a, b)
