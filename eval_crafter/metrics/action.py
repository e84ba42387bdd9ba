"""Action: VideoMAE V2 ViT-B/16 (Kinetics-400) top-5, weighted by CLIP text similarity.

The recogniser is the mmaction2 checkpoint the official code loads
(``<models>/VideoMAE/vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400_20230510-3e7f93b2.pth``),
converted on load into transformers' ``VideoMAEForVideoClassification``
(:func:`convert_mmaction_videomae`); the architecture is read from the weights. The load
is non-strict as the official ``init_recognizer``: keys the recogniser does not have are
ignored (listed in the record's runtime), and a checkpoint without ``backbone.pos_embed``
gets the fixed sinusoid table mmaction2 builds (:func:`sinusoid_position_table`). A
checkpoint that lacks any learned weight is refused (the official run would score with
random weights). The ``.pth`` is read with ``weights_only=True`` and only mmengine's
metadata globals allow-listed (:mod:`eval_crafter.checkpoint`). The
mmaction2 test pipeline is reproduced: ``SampleFrames(clip_len=16, frame_interval=4,
num_clips=5, test_mode=True)``, short side resized to 224 (bilinear), ``ThreeCrop(224)``,
ImageNet mean/std on RGB, softmax per view averaged over the 15 views
(``average_clips='prob'``). CLIP ViT-B/32 is a transformers folder
``<models>/clip-vit-base-patch32/`` (model + tokenizer), used as ``action_score.py`` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from transformers import AutoTokenizer, CLIPModel, VideoMAEConfig, VideoMAEForVideoClassification

from eval_crafter import scoring
from eval_crafter.checkpoint import checkpoint_state_dict, load_checkpoint
from eval_crafter.metrics.base import (
    IncompatibleModelError,
    Metric,
    ModelFile,
    VideoInput,
    mean_of,
    require_model,
)
from eval_crafter.metrics.registry import register_metric
from eval_crafter.prompts import load_kinetics_labels
from tsm_video.data.video_frames import VideoFrames

__all__ = [
    "VIDEOMAE_FILE",
    "CLIP_DIR",
    "sinusoid_position_table",
    "convert_mmaction_videomae",
    "load_videomae",
    "videomae_config_from_state_dict",
    "sample_test_clips",
    "three_crop_views",
    "ActionScore",
]

VIDEOMAE_FILE = (
    "VideoMAE/vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400_20230510-3e7f93b2.pth"
)
VIDEOMAE_URL = (
    "https://download.openmmlab.com/mmaction/v1.0/recognition/videomaev2/"
    "vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400/"
    "vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400_20230510-3e7f93b2.pth"
)
CLIP_DIR = "clip-vit-base-patch32"
CLIP_URL = "https://huggingface.co/openai/clip-vit-base-patch32 (the whole folder)"

CLIP_LEN, FRAME_INTERVAL, NUM_CLIPS, CROP = 16, 4, 5, 224
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

_VIDEOMAE_RULES = (
    (r"^backbone\.patch_embed\.projection\.", "videomae.embeddings.patch_embeddings.projection."),
    (r"^backbone\.blocks\.(\d+)\.norm1\.", r"videomae.encoder.layer.\1.layernorm_before."),
    (r"^backbone\.blocks\.(\d+)\.norm2\.", r"videomae.encoder.layer.\1.layernorm_after."),
    (r"^backbone\.blocks\.(\d+)\.attn\.proj\.", r"videomae.encoder.layer.\1.attention.output.dense."),
    (r"^backbone\.blocks\.(\d+)\.attn\.q_bias$", r"videomae.encoder.layer.\1.attention.attention.query.bias"),
    (r"^backbone\.blocks\.(\d+)\.attn\.v_bias$", r"videomae.encoder.layer.\1.attention.attention.value.bias"),
    (r"^backbone\.blocks\.(\d+)\.mlp\.layers\.0\.0\.", r"videomae.encoder.layer.\1.intermediate.dense."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.layers\.1\.", r"videomae.encoder.layer.\1.output.dense."),
    (r"^backbone\.fc_norm\.", "fc_norm."),
    (r"^cls_head\.fc_cls\.", "classifier."),
)


def sinusoid_position_table(num_tokens: int, dim: int) -> torch.Tensor:
    """mmaction2's fixed ``pos_embed`` (``get_sinusoid_encoding``): (1, num_tokens, dim) float32.

    Angle ``t / 10000 ** (2 * (j // 2) / dim)`` in float64, sine on even ``j``, cosine on
    odd ``j``, then cast to float32.
    """
    pair = torch.arange(dim, dtype=torch.float64)
    pair = (pair - pair % 2) / dim  # 2 * (j // 2) / dim
    angles = torch.arange(num_tokens, dtype=torch.float64)[:, None] * torch.pow(10000.0, -pair)[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos())
    return table.to(torch.float32)[None]


def convert_mmaction_videomae(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, list[str]]:
    """mmaction2 VisionTransformer + TimeSformerHead keys -> transformers VideoMAE keys.

    The fused ``attn.qkv.weight`` (3D, D) splits into query/key/value (D, D) each; the
    fixed sinusoidal ``backbone.pos_embed`` buffer (1, N, D) is returned apart (None when
    the checkpoint has none), to replace the table transformers computes. Keys outside the
    recogniser are returned as ``unexpected`` (the official non-strict load ignores them).
    Returns ``(state_dict, pos_embed, unexpected)``.
    """
    out, pos_embed, unexpected = {}, None, []
    for key, value in state_dict.items():
        if key == "backbone.pos_embed":
            pos_embed = value
            continue
        qkv = re.match(r"^backbone\.blocks\.(\d+)\.attn\.qkv\.weight$", key)
        if qkv:
            prefix = f"videomae.encoder.layer.{qkv.group(1)}.attention.attention"
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{prefix}.{name}.weight"] = part
            continue
        new = key
        for pattern, replacement in _VIDEOMAE_RULES:
            new = re.sub(pattern, replacement, new)
        if new == key:
            unexpected.append(key)
            continue
        out[new] = value
    return out, pos_embed, unexpected


def videomae_config_from_state_dict(
    state_dict: dict[str, torch.Tensor], pos_embed: torch.Tensor | None
) -> VideoMAEConfig:
    """The ViT config the converted weights imply (64-dim heads, 16 frames, 224 crops)."""
    for key in (
        "videomae.embeddings.patch_embeddings.projection.weight",
        "videomae.encoder.layer.0.intermediate.dense.weight",
        "classifier.weight",
    ):
        if key not in state_dict:
            raise IncompatibleModelError(
                f"the VideoMAE checkpoint lacks {key!r} (mmaction2 name); "
                "it is not a VideoMAE V2 ViT recogniser"
            )
    proj = state_dict["videomae.embeddings.patch_embeddings.projection.weight"]  # d 3 t p p
    dim, _, tubelet, patch, _ = proj.shape
    depth = len({k.split(".")[3] for k in state_dict if k.startswith("videomae.encoder.layer.")})
    tokens = (CLIP_LEN // tubelet) * (CROP // patch) ** 2
    if pos_embed is not None and pos_embed.shape[1] != tokens:
        raise IncompatibleModelError(
            f"pos_embed has {pos_embed.shape[1]} tokens; a {CLIP_LEN}-frame {CROP}px input with patch "
            f"{patch} and tubelet {tubelet} gives {tokens}"
        )
    return VideoMAEConfig(
        image_size=CROP,
        patch_size=patch,
        num_channels=3,
        num_frames=CLIP_LEN,
        tubelet_size=tubelet,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=max(1, dim // 64),
        intermediate_size=state_dict["videomae.encoder.layer.0.intermediate.dense.weight"].shape[0],
        qkv_bias=True,
        use_mean_pooling=True,
        layer_norm_eps=1e-6,
        num_labels=state_dict["classifier.weight"].shape[0],
    )


def load_videomae(path: Path) -> tuple[VideoMAEForVideoClassification, dict]:
    """The recogniser of an mmaction2 VideoMAE V2 ``.pth`` (float32, eval mode) and load notes.

    Non-strict as the official load: unexpected keys are ignored; a missing ``pos_embed``
    falls back to :func:`sinusoid_position_table`. Notes: ``{"unexpected_keys": [...],
    "pos_embed": "checkpoint" | "sinusoid"}``.

    Raises:
        IncompatibleModelError: learned weights are missing or have other shapes.
    """
    state = checkpoint_state_dict(load_checkpoint(path), path)
    converted, pos_embed, unexpected = convert_mmaction_videomae(state)
    model = VideoMAEForVideoClassification(videomae_config_from_state_dict(converted, pos_embed))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise IncompatibleModelError(
            f"{path}: the VideoMAE checkpoint lacks {len(missing)} weight(s), e.g. "
            f"{missing[:4]} (transformers names); the official non-strict load "
            "would leave them random"
        )
    bad = [k for k in converted if k in expected and converted[k].shape != expected[k].shape]
    if bad:
        raise IncompatibleModelError(f"{path}: VideoMAE weights with unexpected shapes: {bad[:4]}")
    model.load_state_dict({k: v for k, v in converted.items() if k in expected})
    source = "checkpoint" if pos_embed is not None else "sinusoid"
    if pos_embed is None:
        pos_embed = sinusoid_position_table(*model.videomae.embeddings.position_embeddings.shape[1:])
    model.videomae.embeddings.position_embeddings = pos_embed.float()
    model.fc_norm.eps = 1e-6  # mmaction2 builds every LayerNorm with eps 1e-6
    return model.eval(), {"unexpected_keys": unexpected, "pos_embed": source}


def sample_test_clips(num_frames: int) -> np.ndarray:
    """mmaction2 ``SampleFrames`` test mode: (5, 16) frame indices, looping past the end."""
    span = (CLIP_LEN - 1) * FRAME_INTERVAL + 1
    max_offset = max(num_frames - span, 0)
    offsets = np.round(np.arange(NUM_CLIPS) * (max_offset / float(NUM_CLIPS - 1)))
    inds = offsets[:, None] + np.arange(CLIP_LEN)[None, :] * FRAME_INTERVAL  # clips t
    return np.mod(inds, num_frames).astype(np.int64)


def three_crop_views(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, 224, 224, 3) float32: short side to 224, ``ThreeCrop``."""
    h, w = frames.shape[1:3]
    scale = CROP / min(h, w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    resized = np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for f in frames])
    if new_h == CROP:
        step = (new_w - CROP) // 2
        views = [resized[:, :, x : x + CROP] for x in (0, 2 * step, step)]
    else:
        step = (new_h - CROP) // 2
        views = [resized[:, y : y + CROP] for y in (0, 2 * step, step)]
    return np.stack(views).astype(np.float32)


@register_metric
class ActionScore(Metric):
    """Action recognition score over the prompts with an ``action`` attribute (x100)."""

    name = "action"
    histogram_key = "action_score"

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        super().__init__(models_dir, device, mode, batch_size, fp32)
        path = require_model(
            self.models_dir, VIDEOMAE_FILE, "VideoMAE V2 ViT-B/16 K400 (mmaction2)", VIDEOMAE_URL
        )
        clip_dir = require_model(
            self.models_dir, f"{CLIP_DIR}/config.json", "CLIP ViT-B/32 (transformers folder)", CLIP_URL
        ).parent
        self.recognizer, self.load_notes = load_videomae(path)
        self.recognizer.to(self.device)  # float32, as the official mmaction2 inference
        self.clip = CLIPModel.from_pretrained(clip_dir, local_files_only=True).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
        self.labels = list(load_kinetics_labels())
        self.record_weights(VIDEOMAE_FILE)
        self.record_weights(f"{CLIP_DIR}/")
        self.record_dtype("videomae", torch.float32)
        self.record_dtype("clip", self.clip.dtype)
        self.runtime["videomae_load"] = self.load_notes

    @classmethod
    def required_files(cls, mode: str = "compat", **options: Any) -> list[ModelFile]:
        return [
            ModelFile(VIDEOMAE_FILE, "VideoMAE V2 ViT-B/16 K400 (mmaction2)", VIDEOMAE_URL, (cls.name,)),
            ModelFile(f"{CLIP_DIR}/", "CLIP ViT-B/32 (transformers folder)", CLIP_URL, (cls.name,)),
        ]

    def applies_to(self, meta: dict) -> bool:
        return bool(meta["attributes"].get("action"))

    @torch.no_grad()
    def class_probabilities(self, frames: np.ndarray | VideoFrames) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB -> (num_classes,) probabilities averaged over 5 clips x 3 crops.

        The clips' distinct frames are read ``batch_size`` at a time and cropped frame by frame
        (``three_crop_views``), then arranged into clips: the same views as cropping each clip,
        without holding 80 full-size frames.
        """
        indices = sample_test_clips(len(frames))  # clips t
        unique, inverse = np.unique(indices, return_inverse=True)
        crops = np.concatenate(
            [
                three_crop_views(frames[unique[start : start + self.batch_size]])
                for start in range(0, len(unique), self.batch_size)
            ],
            axis=1,
        )  # 3 u h w c
        views = crops[:, inverse.reshape(indices.shape)]  # crops clips t h w c
        views = views.transpose(1, 0, *range(2, views.ndim)).reshape(-1, *views.shape[2:])  # (clips crops) t
        views = (views - MEAN) / STD
        probs = []
        for start in range(0, len(views), self.batch_size):
            batch = torch.from_numpy(views[start : start + self.batch_size]).to(self.device)
            batch = batch.permute(0, 1, 4, 2, 3)  # v t 3 h w
            probs.append(self.recognizer(pixel_values=batch).logits.float().softmax(-1).cpu())
        return torch.cat(probs).mean(0).numpy()

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """CLIP text features (N, D), tokenised as ``action_score.py`` does (padding, truncation)."""
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        features = self.clip.get_text_features(input_ids=tokens["input_ids"].to(self.device))
        return getattr(features, "pooler_output", features).float().cpu().numpy()

    def score(self, video: VideoInput, meta: dict) -> dict:
        probs = self.class_probabilities(video.frames)
        gt = meta["attributes"]["action"]
        value = scoring.action_score(probs, self.labels, gt, self.encode_text)
        top = [[i, p] for i, p in scoring.top5(probs)]
        return {
            "action_score": value,
            "top5": top,
            "top5_labels": [self.labels[i] for i, _ in top],
            "action": gt,
        }

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        value, n = mean_of(records, "action_score")
        return {"value": value * 100, "n": n, "official": {"action_score": value}}
