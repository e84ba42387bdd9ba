"""The generic trainer on image backbones: sd15-tiny and sd3-tiny through every stage on a
synthetic image folder, with the text LoRA's own learning rate."""

from __future__ import annotations

import pytest
import torch

from data_tools.shapes import make_shapes_dataset
from tsm_video.config import parse_config
from tsm_video.train.runner import run_training
from tsm_video.train.stages import load_trained, plan_stages
from tsm_video.tsm import read_adapter_metadata, tsm_layers


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=6, size=64, seed=0)


@pytest.mark.parametrize(
    "backbone,text_targets", [("sd15-tiny", "clip-text"), ("sd3-tiny", "clip-text-qkvo")]
)
def test_image_backbone_trains_every_stage(tmp_path, images, backbone, text_targets):
    cfg = parse_config(
        {
            "run": {"name": "img", "output_dir": str(tmp_path), "seed": 0},
            "model": {"backbone": backbone, "mixed_precision": "no", "gradient_checkpointing": True},
            "tsm": {
                "scales": [2, 1],
                "rank": 2,
                "targets": "sd",
                "text_lora": {"enabled": True, "rank": 2, "targets": text_targets, "lr": 1e-3},
            },
            "data": {
                "source": "images",
                "images": str(images),
                "height": 64,
                "width": 64,
                "num_frames": 1,
                "num_workers": 0,
                "caption_dropout": 0.5,
                "crop": "random",
            },
            "train": {
                "stages": ["foster", "assemble"],
                "steps": {"foster": 2, "assemble": 1},
                "foster_schedule": "joint",  # one run per scale (per_expert: tests/train/test_schedules.py)
                "lr": 1e-2,
                "global_batch_size": 2,
                "per_device_batch_size": 2,
                "checkpoint_every": 1,
                "validation": {"every": 0},
            },
        }
    )
    results = run_training(cfg, print_fn=lambda s: None)
    assert [r.run.name for r in results] == ["foster_s2", "foster_s1", "assemble"]
    meta = read_adapter_metadata(results[0].output)
    denoiser = "unet" if backbone.startswith("sd15") else "transformer"
    scales = {cfg["scales"][0] for name, cfg in meta["layers"].items() if name.startswith(denoiser + ".")}
    assert meta["backbone"] == backbone and scales == {2}
    model = load_trained(cfg, plan_stages(cfg)[0])
    experts = [layer.lora_B["s2"] for _, layer in tsm_layers(model.denoiser)]
    texts = [layer.lora_B["s1"] for enc in model.text_encoders.values() for _, layer in tsm_layers(enc)]
    assert all(torch.isfinite(b).all() for b in experts + texts)
    assert any(b.abs().sum() > 0 for b in experts) and any(b.abs().sum() > 0 for b in texts)
