"""Each stage trains exactly its parameters: experts (+ text LoRA) in fostering, routers in assembling,
the whole denoiser in the base stage — checked by a real backward through the VC2 objective."""

from __future__ import annotations

import pytest
import torch

from tsm_video.train.objective import DiffusionObjective
from tsm_video.train.randomness import TrainRNG
from tsm_video.train.stages import build_stage_model, plan_stages


def _expected(stage: str, name: str) -> bool:
    if stage == "base":
        return name.startswith("unet.")
    if stage == "foster":
        return ".lora_" in name  # UNet experts (one scale-1 bank for a per-expert run) and the text LoRA
    return ".router." in name


@pytest.mark.parametrize("which", ["base", "lora", "foster", "expert", "assemble"])
def test_gradients_reach_exactly_the_stage_parameters(which, tmp_path, synth_data, tiny_config):
    schedule = "per_expert" if which == "expert" else "joint"
    cfg = tiny_config(
        synth_data, tmp_path, "train.stages=[base, foster, assemble]", f"train.foster_schedule={schedule}"
    )
    run = {r.name: r for r in plan_stages(cfg)}[
        {
            "base": "base",
            "lora": "foster_s1",
            "foster": "foster_s2",
            "expert": "foster_s2_i1",
            "assemble": "assemble",
        }[which]
    ]
    model, ctx = build_stage_model(cfg, run, load_weights=False)
    with torch.no_grad():  # zero-initialised branches (proj_out, lora_B, ...) off zero: no gradient is 0
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    objective = DiffusionObjective(model, train_text=run.stage == "foster")
    rng = TrainRNG(0)
    t = torch.tensor([100, 600, 400, 900])  # both intervals of scale 2 in one batch
    pixels = torch.rand(4, 3, 4, 32, 32, generator=rng.generator) * 2 - 1
    captions = ["a red circle", "", "b", "c"]
    loss = objective(t, rng, pixels=pixels, captions=captions, fps=torch.full((4,), 8.0))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    stage = run.stage
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if _expected(stage, n)}
    assert trainable
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.any(), name
        else:
            assert p.grad is None, name
    if which != "base":
        assert any(n.startswith("text_encoder.") and ".lora_" in n for n, _ in model.named_parameters())
        assert any(n.startswith("text_encoder.") for n in trainable) == (stage == "foster")
    assert model.tsm_ctx is ctx and (ctx is None) == (which == "base")
    if which == "expert":  # one expert of scale 2: a plain (scale-1) LoRA bank of one row per layer
        banks = [p for n, p in model.named_parameters() if n.startswith("unet.") and ".lora_A." in n]
        assert banks and all(p.shape[0] == 1 for p in banks)
