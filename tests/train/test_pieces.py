"""Trainer pieces that need no backbone weights: timestep sampling, RNG state, loss per interval,
checkpoint IO."""

import json
import math

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tsm_video.models import build_backbone
from tsm_video.train.checkpoint import (
    TRAINABLE_FILE,
    RankStates,
    TrainProgress,
    install_trainable_state_hooks,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
)
from tsm_video.train.interval_loss import IntervalLossTracker, plot_interval_losses
from tsm_video.train.randomness import IntervalSampler, TrainRNG

DDPM = build_backbone("vc2-tiny", device="meta")  # only its sample_t runs: uniform integers per interval


def _t(sampler: IntervalSampler, scale: int, rng: TrainRNG, step: int = 0) -> torch.Tensor:
    """Rank 0's first micro-batch of ``step``: the sampler's ids, ``t`` drawn inside by the backbone."""
    return DDPM.sample_t(sampler(step, 0, 0), scale, rng.generator)


def test_stratified_sampler_fills_every_interval():
    t = _t(IntervalSampler("stratified", 4, per_device=16), 4, TrainRNG(0))
    assert t.dtype == torch.long and t.shape == (16,)
    assert torch.bincount(t // 250, minlength=4).tolist() == [4, 4, 4, 4]


def test_interval_sampler_stays_inside():
    t = _t(IntervalSampler("interval", scale=8, interval=3, per_device=64), 8, TrainRNG(1))
    assert ((t >= 375) & (t < 500)).all() and len(t.unique()) > 40
    with pytest.raises(ValueError, match="interval"):
        IntervalSampler("interval", scale=8, interval=8)


def test_uniform_sampler_range():
    t = _t(IntervalSampler("uniform", per_device=4096), 1, TrainRNG(2))
    assert t.min() >= 0 and t.max() < 1000 and len(t.unique()) > 900


def test_rng_state_round_trip_reproduces_every_draw():
    a = TrainRNG(7)
    a.randn((3,))
    state = a.state_dict()
    sampler = IntervalSampler("stratified", 4, per_device=8)
    first = (_t(sampler, 4, a), a.randn((2, 5)), a.drop_captions(["x"] * 9, 0.5))
    b = TrainRNG(123)
    b.load_state_dict(state)
    second = (_t(sampler, 4, b), b.randn((2, 5)), b.drop_captions(["x"] * 9, 0.5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]) and first[2] == second[2]
    assert first[1].dtype == torch.float32


def test_caption_dropout_rate():
    captions = TrainRNG(3).drop_captions(["c"] * 4000, 0.25)
    assert abs(captions.count("") / 4000 - 0.25) < 0.03
    assert TrainRNG(3).drop_captions(["c"] * 10, 0.0) == ["c"] * 10
    assert TrainRNG(3).drop_captions(["c"] * 10, 1.0) == [""] * 10


def test_interval_tracker_means_match_closed_form(tmp_path):
    tr = IntervalLossTracker(4)
    t = torch.tensor([0, 100, 260, 999, 500, 510])
    loss = torch.tensor([1.0, 3.0, 5.0, 7.0, 2.0, 4.0])
    tr.update(t, loss)
    assert tr.flush(step=1) == [2.0, 5.0, 3.0, 7.0]
    tr.update(torch.tensor([0]), torch.tensor([10.0]))
    assert tr.flush(step=2) == [10.0, None, None, None]
    assert tr.totals() == [pytest.approx(14 / 3), 5.0, 3.0, 7.0]
    # state round trip keeps history, totals and the open window
    tr.update(torch.tensor([999]), torch.tensor([1.0]))
    other = IntervalLossTracker(4)
    other.load_state_dict(tr.state_dict())
    assert other.flush(step=3) == [None, None, None, 1.0]
    assert [h["step"] for h in other.history] == [1, 2, 3]
    path = other.save_json(tmp_path / "loss.json", {"stage": "foster"})
    data = json.loads(path.read_text())
    assert data["scale"] == 4 and data["stage"] == "foster" and data["intervals"][0] == "t∈[0,250)"
    png = plot_interval_losses({"run": data}, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(4, 4)
        self.adapter = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.adapter(self.frozen(x))


def _setup(tmp_path):
    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    model = _Toy()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model, opt = acc.prepare(model, opt)
    rng, progress = TrainRNG(5), TrainProgress()
    acc.register_for_checkpointing(RankStates(acc, {"rng": rng}), progress)
    install_trainable_state_hooks(acc)
    return acc, model, opt, rng, progress


def test_checkpoint_saves_only_trainable_and_rotates(tmp_path):
    acc, model, opt, rng, progress = _setup(tmp_path)
    for step in range(1, 5):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        progress.step = step
        save_checkpoint(acc, tmp_path / "ckpt", step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step_3", "step_4"]
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))
    saved = load_file(str(latest_checkpoint(tmp_path / "ckpt") / TRAINABLE_FILE))
    assert set(saved) == {"adapter.weight", "adapter.bias"}
    assert not list((tmp_path / "ckpt" / "step_4").glob("model*.safetensors"))
    # load restores trainable weights, optimizer, rng and progress
    want = {k: v.clone() for k, v in model.state_dict().items()}
    draw = rng.randn((4,))
    with torch.no_grad():
        model.adapter.weight.zero_()
    progress.step = 0
    acc.load_state(str(tmp_path / "ckpt" / "step_4"))
    assert progress.step == 4
    assert all(torch.equal(want[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng.randn((4,)), draw)


def test_resolve_resume(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("latest", tmp_path) is None
    (tmp_path / "step_2").mkdir()
    (tmp_path / "step_10").mkdir()
    (tmp_path / ".tmp-step_11").mkdir()
    assert resolve_resume("latest", tmp_path).name == "step_10"
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        resolve_resume(str(tmp_path / "step_2"), tmp_path)


def test_noise_and_x_t_are_float32_under_autocast(monkeypatch):
    """bf16 latents (what a VAE under bf16 autocast returns) still get float32 noise and x_t."""
    from tsm_video.train.objective import DiffusionObjective

    torch.manual_seed(0)
    model = build_backbone("vc2-tiny").requires_grad_(False)
    latents = torch.randn(2, 4, 2, 4, 4).to(torch.bfloat16)
    monkeypatch.setattr(model, "encode_pixels", lambda pixels, generator=None: latents)
    seen, predict = [], model.predict
    monkeypatch.setattr(model, "predict", lambda x_t, *a, **k: seen.append(x_t) or predict(x_t, *a, **k))
    t = torch.tensor([10, 990])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiffusionObjective(model, train_text=False)(
            t, TrainRNG(5), pixels=torch.zeros(2, 3, 2, 32, 32), captions=["a", "b"], fps=torch.tensor([8, 8])
        )
    (x_t,) = seen
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(5))  # the rng's first draw
    assert x_t.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(loss).all()
    assert torch.equal(x_t, model.add_noise(latents.float(), noise, t)[0])  # float32 noise and arithmetic


def test_lr_factor_warmup_then_constant_or_cosine():
    from tsm_video.train.loop import lr_factor

    # warmup 3 of 11 steps: ramps (s+1)/4, then 1 (constant) or cos from 1 at step 3 to 0 at 11
    assert [lr_factor(3, 11, "constant", s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = [lr_factor(3, 11, "cosine", s) for s in range(12)]
    assert cosine[:3] == [0.25, 0.5, 0.75]
    closed = [0.5 * (1 + math.cos(math.pi * (s - 3) / 8)) for s in range(3, 12)]
    assert cosine[3:] == pytest.approx(closed, abs=1e-15)  # same formula: rounding only
    assert cosine[3] == 1.0 and cosine[7] == pytest.approx(0.5, abs=1e-15) and cosine[11] == 0.0
    assert lr_factor(0, 4, "cosine", 9) == 0.0  # past the end: stays at 0
