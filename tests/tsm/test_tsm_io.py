"""Adapter files: round trips, stage-1 files into stage-2 slots, strict errors, peft-style export."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tsm_video.tsm import (
    FORMAT_VERSION,
    AdapterError,
    TimestepContext,
    adapter_state_dict,
    export_interval_lora,
    inject,
    load_adapter,
    merge_interval,
    read_adapter_metadata,
    save_adapter,
    write_adapter_file,
)

T = 1000


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_k, self.to_v = nn.Linear(6, 6), nn.Linear(6, 6)
        self.conv = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):  # x (B, 6, 3, 3)
        tokens = x.flatten(2).transpose(1, 2)  # B (h w) c
        h = (self.to_k(tokens) + self.to_v(tokens)).transpose(1, 2).reshape(x.shape)  # B c h w
        return self.conv(h)


def make(scales, mode="foster", act="none", seed=0, rank=2):
    torch.manual_seed(seed)
    net, ctx = Net(), TimestepContext(T)
    inject(net, ["to_k", "to_v", "conv"], ctx, scales, rank=rank, alpha=2.0, mode=mode, gate_activation=act)
    return net, ctx


def same_params(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = adapter_state_dict(a), adapter_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("scales,mode,act", [([4], "foster", "none"), ([4, 2, 1], "assemble", "softmax")])
def test_save_load_round_trip(tmp_path, perturb, scales, mode, act):
    src, ctx = make(scales, mode, act)
    perturb(src)
    path = tmp_path / "adapter.safetensors"
    save_adapter(src, path, {"backbone": "tiny", "targets": "to_k,to_v,conv"})
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.safetensors"]  # no temp file left
    dst, ctx2 = make(scales, mode, act)  # same base weights
    perturb(dst, seed=1)
    assert not same_params(src, dst)
    meta = load_adapter(dst, path, expect={"backbone": "tiny"})
    assert same_params(src, dst)
    x, t = torch.randn(3, 6, 3, 3), torch.tensor([0, 400, 999])
    ctx.set(t), ctx2.set(t)
    assert torch.equal(src(x), dst(x))
    assert meta == read_adapter_metadata(path)
    assert meta["backbone"] == "tiny" and meta["scales"] == sorted(scales, reverse=True)
    assert meta["rank"] == 2 and meta["alpha"] == 2.0 and meta["num_timesteps"] == T
    assert meta["gate_activation"] == act and meta["stage"] == ("foster" if mode == "foster" else "assemble")
    assert meta["router"] == ("none" if mode == "foster" else "asymmetric")
    assert meta["layers"]["conv"]["kind"] == "TSMConv"


def test_stage_one_files_load_into_stage_two_scale_slots(tmp_path, perturb):
    files = {}
    for n in (4, 2):
        net, _ = make([n], seed=n)
        perturb(net, seed=n)
        files[n] = tmp_path / f"s{n}.safetensors"
        save_adapter(net, files[n], {"stage": "foster"})
    stage2, ctx = make([4, 2], mode="assemble", seed=9)
    for n, path in files.items():
        meta = load_adapter(stage2, path)
        assert meta["scales"] == [n]
        src, _ = make([n], seed=n)
        load_adapter(src, path)
        assert torch.equal(stage2.to_k.lora_A[f"s{n}"], src.to_k.lora_A[f"s{n}"])
        assert torch.equal(stage2.conv.lora_B[f"s{n}"], src.conv.lora_B[f"s{n}"])
    save_adapter(stage2, tmp_path / "st2.safetensors")
    with pytest.raises(AdapterError, match=r"file scales \[4, 2\] not in the model's \[4\]"):
        load_adapter(make([4])[0], tmp_path / "st2.safetensors")


def test_mismatched_adapter_lists_every_problem(tmp_path):
    src, _ = make([4], rank=2)
    path = tmp_path / "a.safetensors"
    save_adapter(src, path, {"backbone": "tiny"})
    other, _ = make([4], rank=3)
    other.extra = nn.Linear(2, 2)
    inject(other, ["extra"], None, [1])
    with pytest.raises(AdapterError) as err:
        load_adapter(other, path, expect={"backbone": "vc2"})
    msg = str(err.value)
    assert str(path) in msg and "metadata 'backbone'" in msg
    assert "rank is 2 in the file, 3 in the model" in msg
    assert "missing module 'extra'" in msg and "shape (4, 2, 6)" in msg


def test_merged_model_refuses_load(tmp_path, perturb):
    net, ctx = make([4])
    perturb(net)
    save_adapter(net, tmp_path / "a.safetensors")
    merge_interval(net, 1)
    with pytest.raises(AdapterError, match="unmerge_all"):
        load_adapter(net, tmp_path / "a.safetensors")


def test_corrupt_missing_and_foreign_files(tmp_path):
    net, _ = make([4])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(AdapterError, match=f"{bad} is not a readable safetensors"):
        load_adapter(net, bad)
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(net, tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(AdapterError, match="not a tsm-video adapter"):
        read_adapter_metadata(foreign)
    good = tmp_path / "good.safetensors"
    save_adapter(net, good)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(AdapterError, match="trunc.safetensors"):
        load_adapter(net, truncated)
    tensors = {k: v.clone() for k, v in adapter_state_dict(net).items()}
    tensors["to_k.lora_A.s9"] = torch.zeros(1)
    meta = {k: json.dumps(v) for k, v in read_adapter_metadata(good).items()}
    save_file(tensors, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(AdapterError, match="unexpected tensor 'to_k.lora_A.s9'"):
        load_adapter(net, tmp_path / "extra.safetensors")


def test_export_interval_is_a_plain_lora(perturb):
    net, ctx = make([4, 2], mode="assemble")
    perturb(net)
    sd, cfg = export_interval_lora(net, 4, 3)
    assert sorted(sd) == sorted(f"{m}.lora_{ab}.weight" for m in ("to_k", "to_v", "conv") for ab in "AB")
    assert sd["to_k.lora_A.weight"].shape == (2, 6) and sd["to_k.lora_B.weight"].shape == (6, 2)
    assert sd["conv.lora_A.weight"].shape == (2, 6, 3, 3) and sd["conv.lora_B.weight"].shape == (4, 2, 1, 1)
    assert cfg["r"] == 2 and cfg["lora_alpha"] == 2.0 and cfg["target_modules"] == ["to_k", "to_v", "conv"]
    x = torch.randn(5, 6)
    a, b = sd["to_v.lora_A.weight"], sd["to_v.lora_B.weight"]
    lora = net.to_v.base(x) + cfg["lora_alpha"] / cfg["r"] * x @ a.T @ b.T
    merge_interval(net, 3)
    merged = torch.nn.functional.linear(x, net.to_v.merged_weight, net.to_v.base.bias)
    torch.testing.assert_close(merged, lora, atol=1e-5, rtol=1e-5)  # equals the merged core
    with pytest.raises(ValueError, match="no TSM layer has scale 8"):
        export_interval_lora(net, 8, 0)


def test_metadata_reads_no_tensor(tmp_path, monkeypatch):
    """read_adapter_metadata (and generation's inspect_adapter) read the header only."""
    import tsm_video.tsm.io as io_mod

    net, _ = make([4])
    path = tmp_path / "a.safetensors"
    save_adapter(net, path)
    real = io_mod.safe_open
    reads = []

    class Counting:
        def __init__(self, *args, **kwargs):
            self.f = real(*args, **kwargs)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def metadata(self):
            return self.inner.metadata()

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            reads.append(name)
            return self.inner.get_tensor(name)

    monkeypatch.setattr(io_mod, "safe_open", Counting)
    assert read_adapter_metadata(path)["scales"] == [4] and reads == []
    load_adapter(make([4])[0], path)
    assert sorted(reads) == sorted(adapter_state_dict(net))


def test_adapter_files_are_deterministic_bytes(tmp_path, perturb):
    """Equal content → equal bytes (sorted header), whatever the insertion order; safetensors reads it."""
    net, _ = make([4, 2, 1], mode="assemble")
    perturb(net)
    tensors = adapter_state_dict(net)
    meta = read_adapter_metadata(_saved(net, tmp_path / "a.safetensors"))
    write_adapter_file(
        tmp_path / "b.safetensors", dict(reversed(list(tensors.items()))), dict(reversed(list(meta.items())))
    )
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    back = load_file(str(tmp_path / "b.safetensors"))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in back)
    mixed = {
        "h": torch.randn(2, 3).half(),
        "b": torch.randn(4).bfloat16(),
        "i": torch.arange(3),
        "e": torch.zeros(0),
    }
    write_adapter_file(tmp_path / "m.safetensors", mixed, {"format_version": FORMAT_VERSION})
    back = load_file(str(tmp_path / "m.safetensors"))
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in mixed.items())


def _saved(net, path):
    save_adapter(net, path)
    return path


def test_export_mixed_ranks_round_trips_through_peft(perturb):
    """A minority rank first (to_k rank 1, alpha 3; to_v/conv rank 3, alpha 6): the exported config
    takes the most common rank/alpha and names the rest, and peft rebuilds the same outputs.
    Tolerance: float32 sums in a different order, 1e-5 relative to the output magnitude."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    net, ctx = Net(), TimestepContext(T)
    plain = copy.deepcopy(net)
    inject(net, ["to_k"], ctx, [4], rank=1, alpha=3.0, mode="foster")
    inject(net, ["to_v", "conv"], ctx, [4], rank=3, alpha=6.0, mode="foster")
    perturb(net)
    sd, cfg = export_interval_lora(net, 4, 2)
    assert (cfg["r"], cfg["lora_alpha"]) == (3, 6.0)
    assert cfg["rank_pattern"] == {"to_k": 1} and cfg["alpha_pattern"] == {"to_k": 3.0}
    model = peft.inject_adapter_in_model(peft.LoraConfig(**cfg), plain)
    assert not peft.set_peft_model_state_dict(model, sd).unexpected_keys
    x = torch.randn(2, 6, 3, 3)
    ctx.set(torch.tensor([500, 740]))  # interval 2 of scale 4 for both samples
    want = net(x)
    torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_summary_describes_the_denoiser_even_when_text_layers_outnumber_it(tmp_path):
    """A text LoRA (context-free, scale 1) with more layers than the denoiser's experts must not
    turn a stage-1 file into a "lora" one: generation routes experts by the summary."""
    torch.manual_seed(0)
    model = nn.Module()
    model.denoiser, model.text = Net(), nn.Sequential(*[nn.Linear(6, 6) for _ in range(5)])
    inject(model.denoiser, ["to_k"], TimestepContext(T), [8], rank=2, alpha=2.0, mode="foster")
    inject(model.text, [str(i) for i in range(5)], None, [1], rank=2, alpha=2.0, mode="foster")
    save_adapter(model, tmp_path / "a.safetensors")
    meta = read_adapter_metadata(tmp_path / "a.safetensors")
    assert (meta["stage"], meta["scales"], meta["num_timesteps"]) == ("foster", [8], T)
    assert sum(c["scales"] == [1] for c in meta["layers"].values()) == 5  # per-layer configs all kept
