"""Tiny random models of the real architectures, saved in the documented --models layout.

Inverse converters here are written from the original layouts (princeton-vl/RAFT module
names, mmaction2 VisionTransformer names), independently of eval_crafter's converters.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from tsm_video.data.video_io import write_mp4

# the DeAOT fixture generator's weights and inputs are shared with the tests that use them
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_deaot_fixtures import (  # noqa: E402
    REDETECT_AT,
    SCENARIOS,
    deaot_state_dict,
    rectangle_mask,
    synthetic_frames,
)

__all__ = [
    "REDETECT_AT",
    "SCENARIOS",
    "deaot_state_dict",
    "rectangle_mask",
    "synthetic_frames",
    "raft_to_original_layout",
    "videomae_to_mmaction_layout",
    "tiny_videomae",
    "save_tiny_clip",
    "write_video",
    "write_json",
]

_TV_TO_RAFT = (
    (r"^feature_encoder\.", "fnet."),
    (r"^context_encoder\.", "cnet."),
    (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."),
    (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.convnormrelu([12])\.0\.", r".conv\1."),
    (r"\.convnormrelu([12])\.1\.", r".norm\1."),
    (r"^update_block\.motion_encoder\.convcorr(\d)\.0\.", r"update_block.encoder.convc\1."),
    (r"^update_block\.motion_encoder\.convflow(\d)\.0\.", r"update_block.encoder.convf\1."),
    (r"^update_block\.motion_encoder\.conv\.0\.", "update_block.encoder.conv."),
    (r"^update_block\.recurrent_block\.convgru(\d)\.conv([zrq])\.", r"update_block.gru.conv\2\1."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
    (r"^mask_predictor\.conv\.", "update_block.mask.2."),
)


def raft_to_original_layout(tv_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision raft_large keys -> a ``raft-things.pth`` as torch.nn.DataParallel saves it."""
    out = {}
    for key, value in tv_state.items():
        for pattern, replacement in _TV_TO_RAFT:
            key = re.sub(pattern, replacement, key)
        out[f"module.{key}"] = value
        norm3 = re.match(r"^cnet\.(layer\d\.\d)\.downsample\.1\.(.+)$", key)
        if norm3:  # the original batch-norm block registers this norm twice
            out[f"module.cnet.{norm3.group(1)}.norm3.{norm3.group(2)}"] = value
    return out


def videomae_to_mmaction_layout(model) -> dict[str, torch.Tensor]:
    """A transformers VideoMAEForVideoClassification -> mmaction2 Recognizer3D state dict."""
    sd = model.state_dict()
    out = {"backbone.pos_embed": model.videomae.embeddings.position_embeddings.clone()}
    for key, value in sd.items():
        m = re.match(r"^videomae\.encoder\.layer\.(\d+)\.(.+)$", key)
        if key.startswith("videomae.embeddings.patch_embeddings.projection."):
            out[key.replace("videomae.embeddings.patch_embeddings.", "backbone.patch_embed.")] = value
        elif key.startswith("fc_norm."):
            out["backbone." + key] = value
        elif key.startswith("classifier."):
            out[key.replace("classifier.", "cls_head.fc_cls.")] = value
        elif m:
            i, rest = m.groups()
            block = f"backbone.blocks.{i}."
            names = {
                "attention.attention.query.bias": "attn.q_bias",
                "attention.attention.value.bias": "attn.v_bias",
                "attention.output.dense.weight": "attn.proj.weight",
                "attention.output.dense.bias": "attn.proj.bias",
                "layernorm_before.weight": "norm1.weight",
                "layernorm_before.bias": "norm1.bias",
                "layernorm_after.weight": "norm2.weight",
                "layernorm_after.bias": "norm2.bias",
                "intermediate.dense.weight": "mlp.layers.0.0.weight",
                "intermediate.dense.bias": "mlp.layers.0.0.bias",
                "output.dense.weight": "mlp.layers.1.weight",
                "output.dense.bias": "mlp.layers.1.bias",
            }
            if rest in names:
                out[block + names[rest]] = value
            elif rest == "attention.attention.query.weight":
                prefix = f"videomae.encoder.layer.{i}.attention.attention."
                out[block + "attn.qkv.weight"] = torch.cat(
                    [sd[prefix + n + ".weight"] for n in ("query", "key", "value")]
                )
            elif rest not in ("attention.attention.key.weight", "attention.attention.value.weight"):
                raise KeyError(key)
        else:
            raise KeyError(key)
    return out


def tiny_videomae():
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(
        image_size=224,
        patch_size=32,
        num_frames=16,
        tubelet_size=2,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        qkv_bias=True,
        use_mean_pooling=True,
        layer_norm_eps=1e-6,
        num_labels=400,
    )
    model = VideoMAEForVideoClassification(config).eval()
    for p in model.parameters():  # push biases and norms off their init so every key matters
        p.data.add_(0.02 * torch.randn_like(p))
    return model


def save_tiny_clip(folder: Path) -> None:
    """A 2-layer CLIP and a letters-only CLIP tokenizer, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_video(path: Path, num_frames: int = 6, size=(60, 76), step: int = 3, seed: int = 0) -> np.ndarray:
    """A bright square moving right on a noisy background; returns the written frames."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = rng.integers(0, 40, (num_frames, h, w, 3), dtype=np.uint8)
    for t in range(num_frames):
        x = 4 + step * t
        frames[t, 20:36, x : x + 16] = (40, 80, 230)
    write_mp4(path, frames, 8.0)
    return frames


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path
