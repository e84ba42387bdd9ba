"""Checkpoint loading (official .ckpt layout and safetensors), strict errors, and the export command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tsm_video.cli import main
from tsm_video.diffusion import CHECKPOINT_BUFFERS
from tsm_video.export import export_vc2_safetensors
from tsm_video.models import build_backbone
from tsm_video.models.vc2 import CheckpointError, VC2Model
from tsm_video.models.vc2.checkpoint import read_state_dict


@pytest.fixture(scope="module")
def source() -> VC2Model:
    torch.manual_seed(1)
    return build_backbone("vc2-tiny")


@pytest.fixture(scope="module")
def ckpt(source, tmp_path_factory) -> Path:
    """An official-layout model.ckpt: {"state_dict": ...} plus lightning-style scalars."""
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": source.checkpoint_state_dict(), "epoch": 3, "global_step": 1200}, path)
    return path


def _assert_same_weights(a: VC2Model, b: VC2Model) -> None:
    sa, sb = a.checkpoint_state_dict(), b.checkpoint_state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ckpt_round_trip_loads_strictly(source, ckpt):
    loaded = build_backbone("vc2-tiny", checkpoint=ckpt)  # meta build + assign
    _assert_same_weights(source, loaded)
    assert not any(p.is_meta for p in loaded.parameters())
    torch.manual_seed(5)
    fresh = build_backbone("vc2-tiny")
    fresh.load_checkpoint(ckpt)  # copy into an existing model
    _assert_same_weights(source, fresh)
    half = build_backbone("vc2-tiny", checkpoint=ckpt, dtype=torch.bfloat16)
    assert half.unet.out[2].weight.dtype == torch.bfloat16


def test_export_then_load_without_pickle(source, ckpt, tmp_path, monkeypatch):
    out = tmp_path / "model.safetensors"
    assert (
        main(["export", "vc2-safetensors", "--ckpt", str(ckpt), "--out", str(out), "--backbone", "vc2-tiny"])
        == 0
    )
    assert set(load_file(out)) == set(source.checkpoint_state_dict())
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not run for safetensors")

    monkeypatch.setattr(torch, "load", no_pickle)
    _assert_same_weights(source, build_backbone("vc2-tiny", checkpoint=out))


def test_export_fills_absent_schedule_buffers(source, tmp_path):
    weights = {k: v for k, v in source.checkpoint_state_dict().items() if k not in CHECKPOINT_BUFFERS}
    path = tmp_path / "weights_only.ckpt"
    torch.save({"state_dict": weights}, path)
    count = export_vc2_safetensors(path, tmp_path / "full.safetensors", backbone="vc2-tiny")
    assert count == len(weights) + len(CHECKPOINT_BUFFERS)
    full = load_file(tmp_path / "full.safetensors")
    assert torch.equal(full["scale_arr"], source.schedule.scale_arr)


def test_mismatched_file_gives_one_summary(source, tmp_path):
    state = dict(source.checkpoint_state_dict())
    del state["model.diffusion_model.out.2.weight"]
    state["model.diffusion_model.extra.weight"] = torch.zeros(2)
    state["first_stage_model.quant_conv.bias"] = torch.zeros(3)
    state["betas"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    with pytest.raises(CheckpointError) as info:
        build_backbone("vc2-tiny", checkpoint=path)
    message = str(info.value)
    assert str(path) in message
    assert "missing (1): model.diffusion_model.out.2.weight" in message
    assert "unexpected (1): model.diffusion_model.extra.weight" in message
    assert (
        "mis-shaped (2)" in message and "first_stage_model.quant_conv.bias (file [3] vs model [8])" in message
    )
    assert "betas (file [7] vs model [1000])" in message
    with pytest.raises(CheckpointError, match="missing"):  # the meta dry run checks the same
        build_backbone("vc2-tiny", checkpoint=path, device="meta")
    assert (
        main(
            [
                "export",
                "vc2-safetensors",
                "--ckpt",
                str(path),
                "--out",
                str(tmp_path / "o.safetensors"),
                "--backbone",
                "vc2-tiny",
            ]
        )
        == 2
    )


def test_other_schedule_is_refused(source, tmp_path):
    state = dict(source.checkpoint_state_dict())
    state["scale_arr"] = torch.ones(1400)
    path = tmp_path / "other_schedule.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"schedule buffer\(s\) \['scale_arr'\]"):
        build_backbone("vc2-tiny", checkpoint=path)


class NotATensor:
    pass


def test_unreadable_files(tmp_path):
    pickled = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": NotATensor()}}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(pickled)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.ckpt")
    (tmp_path / "x.npz").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        read_state_dict(tmp_path / "x.npz")
    scalars = tmp_path / "scalars.ckpt"
    torch.save({"state_dict": {"a": 1}}, scalars)
    with pytest.raises(CheckpointError, match="dict of tensors"):
        read_state_dict(scalars)
