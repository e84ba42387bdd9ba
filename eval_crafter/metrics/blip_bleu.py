"""BLIP-BLEU: BLIP-2 OPT-2.7b captions five frames; BLEU of the captions against the prompt.

What the official ``Scores_with_CLIP.py::calculate_blip_bleu`` does, and what we keep:

1. every frame read by ``cv2`` (**BGR**) and ``cv2.resize``d to 224x224 (bilinear);
2. five frames at ``torch.linspace(0, N - 1, 5).long()`` (truncation, ends included);
3. each frame through ``Blip2Processor`` and ``model.generate(**inputs)`` with no generation
   arguments (the checkpoint's generation config: greedy, at most 20 new tokens), **one
   frame per call**; the whole model runs in float16 on CUDA (``torch_dtype=float16``);
4. ``batch_decode(..., skip_special_tokens=True)[0].strip()``, then ``scoring.blip_bleu``.

``compat`` mode feeds the frames as BGR, as the official code does (BLIP-2 was trained on
RGB, so colours are swapped); ``fixed`` mode feeds RGB and scores with
``scoring.blip_bleu_fixed``. We also caption one frame per ``generate`` call, so no padding
or batch-dependent kernel enters. On CPU (or with ``fp32``) the model runs in float32.

Precision on CUDA: transformers 5 keeps the Q-Former and its query tokens in float32
(``_keep_in_fp32_modules``) when a BLIP-2 model is loaded in float16; the transformers of
2023 that the official run used converted them to float16 with the rest. :func:`load_blip2`
casts them back to float16, so the whole model is float16 as in the official run. What
still differs: transformers 5 builds the language-model prompt from ``<image>`` token ids
whose embeddings are replaced by the projected queries (the 2023 code concatenated the
embeddings); the sequence and positions are the same, but kernels (attention backend,
fp16 matmul order) may differ by float16 rounding.

Old folders: a ``config.json`` without ``image_token_index`` (hub snapshots before the
``<image>`` token was added, and older EvalCrafter ``checkpoints/`` clones) makes
transformers 5 ``generate`` fail. :func:`load_blip2` sets the token to the id the processor
gives ``<image>`` (it adds the token to such an old tokenizer, at the first free id, 50265
for OPT as in the current hub config) and the processor's ``num_query_tokens`` from the
model config; a folder where that id does not fit the language model's vocabulary is
refused with :class:`IncompatibleModelError`.

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
from eval_crafter.metrics.base import (
    IncompatibleModelError,
    Metric,
    ModelFile,
    VideoInput,
    mean_of,
    require_model,
)
from eval_crafter.metrics.registry import register_metric
from eval_crafter.metrics.runtime import official_dtype

__all__ = [
    "BLIP2_DIR",
    "BLIP2_SOURCE",
    "NUM_CAPTIONS",
    "CAPTION_FRAME_SIZE",
    "caption_indices",
    "caption_images",
    "caption_frames",
    "load_blip2",
    "fix_old_blip2_config",
    "BlipBleu",
]

BLIP2_DIR = "blip2-opt-2.7b"
BLIP2_SOURCE = (
    "https://huggingface.co/Salesforce/blip2-opt-2.7b (git clone, as EvalCrafter's checkpoints/download.sh)"
)
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
def caption_frames(
    model: Blip2ForConditionalGeneration, processor: Blip2Processor, images: np.ndarray
) -> list[str]:
    """One stripped caption per image: ``generate(**processor(image))`` with default arguments.

    Args:
        model: a BLIP-2 captioner (its device and dtype are used for the inputs).
        processor: its processor (image processor + tokenizer).
        images: (N, H, W, 3) uint8 in the channel order to feed; one ``generate`` call per
            image, as the official loop.
    """
    captions: list[str] = []
    for image in images:
        inputs = processor(images=[image], return_tensors="pt").to(model.device, model.dtype)
        generated = model.generate(**inputs)
        captions.append(processor.batch_decode(generated, skip_special_tokens=True)[0].strip())
    return captions


def fix_old_blip2_config(
    model: Blip2ForConditionalGeneration, processor: Blip2Processor, folder: Path
) -> bool:
    """Give an old folder's model the ``<image>`` token id and query count transformers 5 needs.

    Returns whether anything was set. Raises :class:`IncompatibleModelError` when the id the
    processor gives ``<image>`` does not fit the language model's embedding table.
    """
    config, changed = model.config, False
    if config.image_token_index is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
        vocab = model.get_input_embeddings().num_embeddings
        if token_id is None or not 0 <= token_id < vocab:
            raise IncompatibleModelError(
                f"{folder}/config.json has no image_token_index and the tokenizer's "
                f"{processor.image_token.content!r} id {token_id} is outside the language model's "
                f"{vocab} embeddings; use a current Salesforce/blip2-opt-2.7b snapshot"
            )
        config.image_token_index = token_id
        changed = True
    if processor.num_query_tokens is None:
        processor.num_query_tokens = config.num_query_tokens
        changed = True
    return changed


def load_blip2(
    models_dir: Path | str, device: Any, fp32: bool = False
) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Load ``models_dir/blip2-opt-2.7b``: float16 on CUDA as the official code (Q-Former
    included), float32 on CPU or with ``fp32``; old configs are completed
    (:func:`fix_old_blip2_config`).

    Raises:
        ModelNotFoundError: the folder (its ``config.json``) is missing.
        IncompatibleModelError: an old folder that cannot be completed.
    """
    folder = require_model(
        models_dir, f"{BLIP2_DIR}/config.json", "BLIP-2 OPT-2.7b (transformers folder)", BLIP2_SOURCE
    ).parent
    device = torch.device(device)
    dtype = official_dtype(device, torch.float16, fp32)
    processor = Blip2Processor.from_pretrained(folder, local_files_only=True, backend="pil")
    model = Blip2ForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
    fix_old_blip2_config(model, processor, folder)
    if dtype == torch.float16:  # transformers 5 keeps these in float32; the 2023 run had them in float16
        model.qformer.half()
        model.query_tokens.data = model.query_tokens.data.half()
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

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        super().__init__(models_dir, device, mode, batch_size, fp32)
        self.model, self.processor = load_blip2(self.models_dir, self.device, self.fp32)
        self.record_weights(f"{BLIP2_DIR}/")
        self.record_dtype("blip2", self.model.language_model.dtype)
        self.record_dtype("qformer", self.model.qformer.dtype)

    @classmethod
    def required_files(cls, mode: str = "compat", **options: Any) -> list[ModelFile]:
        return [
            ModelFile(f"{BLIP2_DIR}/", "BLIP-2 OPT-2.7b (transformers folder)", BLIP2_SOURCE, (cls.name,))
        ]

    def score(self, video: VideoInput, meta: dict) -> dict:
        indices, images = caption_images(video.frames, self.mode)
        captions = caption_frames(self.model, self.processor, images)
        prompt = meta["prompt"]
        bleu = scoring.blip_bleu if self.mode == "compat" else scoring.blip_bleu_fixed
        return {
            "frame_indices": indices.tolist(),
            "captions": captions,
            "prompt": prompt,
            "blip_bleu": bleu(captions, prompt),
        }

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        mean, n = mean_of(records, "blip_bleu")
        return {"value": mean * 100, "n": n, "official": {"blip_bleu": mean}}
