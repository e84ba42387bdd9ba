"""train.loss_weighting: the weights against their closed forms (VC2's schedule with scale_arr, a
DDPM ε / v backbone), refusals, config checks, old interval files, and the trainer applying them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tsm_video.config import ConfigError, parse_config
from tsm_video.diffusion.schedule import VC2Schedule
from tsm_video.train.intervals import _disagreements
from tsm_video.train.weighting import LOSS_WEIGHTINGS, loss_weights, snr_table


def _vc2_snr() -> np.ndarray:
    """VC2's SNR written out: LDM linear betas 0.00085 → 0.012, x0 shrunk by scale_arr (1 → 0.7
    over the first 400 steps, then 0.7)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    acp = np.cumprod(1 - betas)
    scale = np.concatenate([np.linspace(1.0, 0.7, 400), np.full(600, 0.7)])
    return acp * scale**2 / (1 - acp)


def _normed(w: np.ndarray) -> np.ndarray:
    return w / w.mean()


def test_vc2_weights_match_the_closed_form():
    model = SimpleNamespace(schedule=VC2Schedule())
    snr = _vc2_snr()
    got, target = snr_table(model)
    assert target == "eps"
    np.testing.assert_allclose(got.numpy(), snr, rtol=1e-4)  # float32 tables
    assert loss_weights(model, "none") is None
    expected = {
        "v": 1 + 1 / snr,
        "min_snr": np.minimum(snr, 5.0) / snr,
        "x0_clip": np.minimum(1 / snr, 5.0),
    }
    for kind, w in expected.items():
        out = loss_weights(model, kind, 5.0)
        assert out.shape == (1000,) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), _normed(w), rtol=1e-4, err_msg=kind)
        assert abs(out.double().mean().item() - 1) < 1e-6
    # the point of `v`: x0-space weight on high t (SNR(999) ≈ 0.0023: weight ≈ 430x that of t = 0)
    v = loss_weights(model, "v")
    assert v[999] / v[0] > 400 and v[500:].sum() / v.sum() > 0.95
    # γ matters where it clips
    assert not torch.equal(loss_weights(model, "min_snr", 1.0), loss_weights(model, "min_snr", 5.0))


def test_ddpm_weights_eps_and_v_prediction():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    acp = np.cumprod(1 - betas)
    snr = acp / (1 - acp)
    sched = SimpleNamespace(alphas_cumprod=torch.tensor(acp, dtype=torch.float32))
    eps = SimpleNamespace(train_scheduler=sched, prediction="eps")
    np.testing.assert_allclose(
        loss_weights(eps, "v").numpy(), _normed(1 / acp), rtol=1e-4
    )  # VP: 1 + 1/SNR = 1/ᾱ
    v = SimpleNamespace(train_scheduler=sched, prediction="v")
    # a v-model's loss already is the v-MSE: `v` leaves it as it is
    np.testing.assert_allclose(loss_weights(v, "v").numpy(), np.ones(1000), rtol=1e-5)
    # Min-SNR-γ for v-prediction (Hang et al. 2023): min(SNR, γ) / (SNR + 1)
    np.testing.assert_allclose(
        loss_weights(v, "min_snr", 5.0).numpy(), _normed(np.minimum(snr, 5.0) / (snr + 1)), rtol=1e-4
    )


def test_flow_backbone_and_unknown_kind_refused():
    with pytest.raises(ConfigError, match="train.loss_weighting.*flow matching"):
        loss_weights(SimpleNamespace(name="sd3"), "v")
    assert loss_weights(SimpleNamespace(name="sd3"), "none") is None
    with pytest.raises(ConfigError, match="valid"):
        loss_weights(SimpleNamespace(schedule=VC2Schedule()), "snr")


def test_config_keys():
    cfg = parse_config({}, ["train.loss_weighting=v", "train.loss_weighting_gamma=20"])
    assert (cfg.train.loss_weighting, cfg.train.loss_weighting_gamma) == ("v", 20.0)
    assert parse_config({}, []).train.loss_weighting == "none"
    assert set(LOSS_WEIGHTINGS) == {"none", "v", "min_snr", "x0_clip"}
    with pytest.raises(ConfigError, match="train.loss_weighting"):
        parse_config({}, ["train.loss_weighting=min-snr"])
    with pytest.raises(ConfigError, match="train.loss_weighting_gamma"):
        parse_config({}, ["train.loss_weighting_gamma=0"])


def test_interval_files_from_before_the_key_read_as_none():
    old = {"recipe": {"train.lr": 0.001}}
    want = {"recipe": {"train.lr": 0.001, "train.loss_weighting": "none", "train.loss_weighting_gamma": 5.0}}
    assert _disagreements("f", old, want) == []
    want["recipe"]["train.loss_weighting"] = "v"
    assert _disagreements("f", old, want) == ["f: train.loss_weighting='none' (expected 'v')"]


@pytest.mark.slow
def test_trainer_applies_the_weighting(tmp_path, synth_data, tiny_config):
    """One base step: `none` is the plain mean (equal to the default run bit for bit), `v` moves
    the weights differently, and the logged loss stays the unweighted ε-MSE."""
    from tsm_video.train.runner import run_training

    quiet = {"print_fn": lambda s: None}
    args = ("train.stages=[base]", "train.steps.base=1", "data.num_frames=2")
    digests, losses = {}, {}
    for name, extra in (
        ("default", ()),
        ("none", ("train.loss_weighting=none",)),
        ("v", ("train.loss_weighting=v",)),
    ):
        cfg = tiny_config(Path(synth_data), tmp_path / name, *args, *extra)
        (result,) = run_training(cfg, **quiet)
        digests[name], losses[name] = result.digest, result.interval_loss
    assert digests["default"] == digests["none"] != digests["v"]
    assert losses["v"] == losses["none"]  # same t and noise before the step: the unweighted loss is logged
