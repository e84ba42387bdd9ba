"""The image recipes plan on the meta device (real architectures, no weights or data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsm_video.config import load_config
from tsm_video.train.plan import describe_plan, trainable_counts
from tsm_video.train.stages import plan_stages

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Stage-1 scale-1 trainable counts: one rank-4 expert on the App. A.1 targets (denoiser + text)
EXPECTED = {
    "sd15_t2icompbench": ("sd15", 797_184, 147_456, 1e-4),
    "sd2_t2icompbench": ("sd2", 829_952, 376_832, 1e-4),
    "pixart_alpha_t2icompbench": ("pixart-alpha", 2_064_384, 1_572_864, 2e-5),
    "pixart_alpha_sam_llava": ("pixart-alpha", 2_064_384, 1_572_864, 2e-5),
    "sd3_t2icompbench": ("sd3", 1_179_648, 1_605_632, 1e-5),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_recipe_plans_on_meta(name):
    backbone, experts, text, lr = EXPECTED[name]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.backbone == backbone and cfg.train.global_batch_size == 64
    assert cfg.train.steps.foster == cfg.train.steps.assemble == 4000 and cfg.train.lr == lr
    runs = plan_stages(cfg)  # per_expert (Tab. 8): 8 expert runs of scale 8, then scale 1, then stage 2
    assert [r.name for r in runs] == [f"foster_s8_i{i}" for i in range(8)] + ["foster_s1", "assemble"]
    counts = trainable_counts(cfg, runs[8])
    assert counts["experts s1"] == experts and counts["text LoRA"] == text
    assert trainable_counts(cfg, runs[0])["expert"] == experts  # one expert = one vanilla LoRA


def test_plan_report_names_missing_image_data():
    cfg = load_config(CONFIGS / "sd15_t2icompbench.yaml")
    report = describe_plan(cfg, plan_stages(cfg), num_processes=1)
    assert "expert 797,184" in report and "assemble the 8 expert files" in report  # 6,377,472 / 8
    assert "data.images: data/t2icompbench/color" in report


def test_sd3_text_lora_has_its_own_lr_and_weight_decay():
    cfg = load_config(CONFIGS / "sd3_t2icompbench.yaml")
    assert (cfg.tsm.text_lora.lr, cfg.tsm.text_lora.weight_decay) == (5e-6, 1e-3)
    assert (cfg.train.lr, cfg.train.weight_decay) == (1e-5, 1e-4)
