"""BLIP-BLEU: BLIP-2 OPT-2.7b captions five frames; BLEU of the captions against the prompt.

What the official ``Scores_with_CLIP.py::calculate_blip_bleu`` does, and what we keep:

1. every frame read by ``cv2`` (**BGR**) and ``cv2.resize``d to 224x224 (bilinear);
2. five frames at ``torch.linspace(0, N - 1, 5).long()`` (truncation, ends included);
3. each frame through ``Blip2Processor`` and ``model.generate(**inputs)`` with no generation
   arguments (the checkpoint's generation config: greedy, the library's default length
   limit); the model runs in float16 on CUDA;
4. ``batch_decode(..., skip_special_tokens=True)[0].strip()``, then ``scoring.blip_bleu``.

``compat`` mode feeds the frames as BGR, as the official code does (BLIP-2 was trained on
RGB, so colours are swapped); ``fixed`` mode feeds RGB and scores with
``scoring.blip_bleu_fixed``. The five frames are captioned as one batch (``batch_size``
frames per ``generate`` call) instead of one call per frame. On CPU the model runs in
float32.

Weights: ``--models DIR/blip2-opt-2.7b/``, the transformers folder of
``Salesforce/blip2-opt-2.7b`` (the official ``checkpoints/download.sh`` clones the same
repository).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from eval_crafter import scoring
from eval_crafter.metrics.base import Metric, VideoInput, mean_of, require_model
from eval_crafter.metrics.registry import register_metric

__all__ = [
    "BLIP2_DIR",
    "BLIP2_SOURCE",
    "NUM_CAPTIONS",
    "CAPTION_FRAME_SIZE",
    "caption_indices",
    "caption_images",
    "caption_frames",
    "load_blip2",
    "BlipBleu",
]

BLIP2_DIR = "blip2-opt-2.7b"
BLIP2_SOURCE = ("https://huggingface.co/Salesforce/blip2-opt-2.7b "
                "(git clone, as EvalCrafter's checkpoints/download.sh)")
NUM_CAPTIONS = 5
CAPTION_FRAME_SIZE = 224  # the official cv2.resize target, before the processor


def caption_indices(num_frames: int, num: int = NUM_CAPTIONS) -> np.ndarray:
    """Frame indices ``torch.linspace(0, N - 1, num).long()``: evenly spaced, truncated, ends kept.

    Returns an (num,) int64 array; indices repeat when ``num_frames < num``.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame to be captioned")
    return np.linspace(0, num_frames - 1, num).astype(np.int64)


def caption_images(frames: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The frames BLIP-2 sees: ``(indices, images)``.

    Args:
        frames: (F, H, W, 3) uint8 RGB, every frame of the video.
        mode: ``"compat"`` flips to BGR (the official cv2 frames), ``"fixed"`` keeps RGB.

    Returns:
        indices (5,) int64 and images (5, 224, 224, 3) uint8, resized as the official code
        does (``cv2.resize``, bilinear) in the channel order fed to the processor.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    indices = caption_indices(len(frames))
    picked = frames[indices]
    if mode == "compat":
        picked = picked[..., ::-1]  # f h w c, RGB -> BGR
    size = (CAPTION_FRAME_SIZE, CAPTION_FRAME_SIZE)
    images = np.stack([cv2.resize(np.ascontiguousarray(f), size) for f in picked])
    return indices, images


@torch.inference_mode()
def caption_frames(model: Blip2ForConditionalGeneration, processor: Blip2Processor, images: np.ndarray,
                   batch_size: int = 8) -> list[str]:
    """One stripped caption per image: ``generate(**processor(images))`` with default arguments.

    Args:
        model: a BLIP-2 captioner (its device and dtype are used for the inputs).
        processor: its processor (image processor + tokenizer).
        images: (N, H, W, 3) uint8 in the channel order to feed.
        batch_size: images per ``generate`` call.
    """
    captions: list[str] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        inputs = processor(images=chunk, return_tensors="pt").to(model.device, model.dtype)
        generated = model.generate(**inputs)
        captions += [c.strip() for c in processor.batch_decode(generated, skip_special_tokens=True)]
    return captions


def load_blip2(models_dir: Path | str, device: Any) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Load ``models_dir/blip2-opt-2.7b`` (float16 on CUDA as the official code, else float32).

    Raises:
        ModelNotFoundError: the folder (its ``config.json``) is missing.
    """
    folder = require_model(models_dir, f"{BLIP2_DIR}/config.json", "BLIP-2 OPT-2.7b (transformers folder)",
                           BLIP2_SOURCE).parent
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    processor = Blip2Processor.from_pretrained(folder, local_files_only=True, backend="pil")
    model = Blip2ForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return model.to(device).eval(), processor


@register_metric
class BlipBleu(Metric):
    """BLIP-BLEU over all 700 prompts; reported as mean x 100.

    Record per video: ``frame_indices``, ``captions``, ``prompt`` (the text the mode scores
    against: the runner puts the official ``prompts/NNNN.txt`` text in compat mode, the
    metadata prompt in fixed mode) and ``blip_bleu`` (0..1).
    """

    name = "blip_bleu"
    histogram_key = "blip_bleu"

    def __init__(self, models_dir: Path | str, device: Any = "cpu", mode: str = "compat",
                 batch_size: int = 8) -> None:
        super().__init__(models_dir, device, mode, batch_size)
        self.model, self.processor = load_blip2(self.models_dir, device)

    def score(self, video: VideoInput, meta: dict) -> dict:
        indices, images = caption_images(video.frames, self.mode)
        captions = caption_frames(self.model, self.processor, images, self.batch_size)
        prompt = meta["prompt"]
        bleu = scoring.blip_bleu if self.mode == "compat" else scoring.blip_bleu_fixed
        return {"frame_indices": indices.tolist(), "captions": captions, "prompt": prompt,
                "blip_bleu": bleu(captions, prompt)}

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        mean, n = mean_of(records, "blip_bleu")
        return {"value": mean * 100, "n": n, "official": {"blip_bleu": mean}}
