"""Count and Color: GroundingDINO finds the prompt's object, SAM segments each box, DeAOT tracks.

The official ``object_attributes_eval.py`` runs Segment-and-Track-Anything on raw frames
0, 5, 10, ...: GroundingDINO SwinT-OGC + SAM ViT-B on frame 0 and on every 9th processed
frame, the DeAOT tracker in between. ``detection="track"`` (the default) follows that
schedule with the native DeAOT (:mod:`eval_crafter.deaot`, :mod:`eval_crafter.metrics.tracking`);
``detection="every-frame"`` is the documented alternative that detects on every processed
frame and needs no tracker (docs/evalcrafter_detection.md says how it approximates the
tracker). Per detection frame (what ``SegTracker.detect_and_seg`` computes):

1. GroundingDINO on the RGB frame resized as the official ``RandomResize([800], 1333)``
   (PIL bilinear), caption ``object.lower().strip() + "."``; every query whose max token
   probability is ``> 0.6`` (``box_threshold``) is a box -- the official ``predict``
   applies no NMS and ``text_threshold`` (0.5) only labels phrases;
2. boxes scaled to pixels (``cxcywh * [W, H, W, H]`` -> ``xyxy``, ``int()``-truncated);
3. SAM ViT-B per box, twice as ``Segmentor.segment_with_box``: the box with three masks,
   then the box plus the best mask's low-res logits, keeping the best-IoU mask;
4. masks merged into one id map: uint8 zeros, box ``i`` (1-based, in detection order)
   writes ``i`` over its pixels, so later boxes overwrite earlier ones; a frame without
   any box is ``np.zeros((H, W))`` -- **float64**, as the official code returns.

Then ``scoring.count_score(masks, gt)`` and ``scoring.color_score(frames, masks, gt)``
(``color_score_fixed`` in fixed mode). On CUDA both models run under float16 autocast, as
the official ``video_detection`` (``fp32`` turns autocast off). Count and Color share one
loaded copy of the two models (:meth:`DetectionModels.shared`).

Weights: ``--models DIR/grounding-dino-tiny/`` (``IDEA-Research/grounding-dino-tiny``, the
transformers port of ``groundingdino_swint_ogc.pth``), ``--models DIR/sam-vit-base/``
(``facebook/sam-vit-base``, the port of ``sam_vit_b_01ec64.pth``) and, for the tracker,
the official ``--models DIR/ckpt/R50_DeAOTL_PRE_YTB_DAV.pth``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision.ops import box_convert
from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor, SamModel, SamProcessor

from eval_crafter import scoring
from eval_crafter.deaot import DeAOT, DeAOTTracker, load_deaot
from eval_crafter.errors import EvalInputError
from eval_crafter.metrics.base import (
    DETECTION_SCHEDULES,
    Metric,
    ModelFile,
    VideoInput,
    mean_of,
    require_model,
)
from eval_crafter.metrics.registry import register_metric
from eval_crafter.metrics.tracking import frame_roles, track_video

__all__ = [
    "GROUNDING_DINO_DIR",
    "SAM_DIR",
    "DEAOT_FILE",
    "DETECTION_SCHEDULES",
    "FRAME_STEP",
    "BOX_THRESHOLD",
    "TEXT_THRESHOLD",
    "parse_attribute",
    "grounding_caption",
    "grounding_size",
    "boxes_to_pixels",
    "merge_masks",
    "detect_boxes",
    "segment_boxes",
    "detect_and_segment",
    "DetectionModels",
    "CountMetric",
    "ColorMetric",
]

GROUNDING_DINO_DIR = "grounding-dino-tiny"
GROUNDING_DINO_SOURCE = (
    "https://huggingface.co/IDEA-Research/grounding-dino-tiny (transformers port of the official "
    "https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swint_ogc.pth)"
)
SAM_DIR = "sam-vit-base"
SAM_SOURCE = (
    "https://huggingface.co/facebook/sam-vit-base (transformers port of the official "
    "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth)"
)
DEAOT_FILE = "ckpt/R50_DeAOTL_PRE_YTB_DAV.pth"
DEAOT_SOURCE = (
    "EvalCrafter checkpoints/download.sh (gdown 1QoChMkTVxdYZ_eBlZhK2acq9KMQZccPJ; "
    "aot-benchmark MODEL_ZOO.md, R50-DeAOT-L PRE_YTB_DAV)"
)
DEAOT_WHAT = "DeAOT R50-DeAOT-L tracker (official .pth)"
FRAME_STEP = 5  # official Num: raw frames 0, 5, 10, ...
BOX_THRESHOLD = 0.6  # official box_threshold
TEXT_THRESHOLD = 0.5  # official text_threshold: labels phrases only, never filters boxes (unused here)


def parse_attribute(attribute: str) -> tuple[str, str]:
    """``"2 dog"`` -> ``("2", "dog")``, ``"red fire hydrant"`` -> ``("red", "fire hydrant")``.

    The first word is the ground truth (count or colour), the rest the grounding caption,
    as the official main splits the metadata attribute.
    """
    words = attribute.split()
    if len(words) < 2:
        raise ValueError(f"attribute {attribute!r} needs a value and an object, e.g. '2 dog'")
    return words[0], " ".join(words[1:])


def grounding_caption(text: str) -> str:
    """GroundingDINO's ``preprocess_caption``: lower-case, strip, end with ``"."``."""
    caption = text.lower().strip()
    return caption if caption.endswith(".") else caption + "."


def grounding_size(height: int, width: int, shortest: int = 800, longest: int = 1333) -> tuple[int, int]:
    """GroundingDINO's ``RandomResize([shortest], max_size=longest)`` output ``(h, w)``.

    The short side becomes ``shortest`` unless the long side would pass ``longest``; then
    the short side is ``round(longest * short / long)`` and the long side follows from that
    rounded value (transformers keeps it unrounded: up to 1 px apart).
    """
    size = shortest
    short, long = float(min(height, width)), float(max(height, width))
    if long / short * size > longest:
        size = int(round(longest * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def boxes_to_pixels(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Normalised ``cxcywh`` boxes (K, 4) -> pixel ``xyxy`` (K, 4) int64, as ``transfer_boxes_format``.

    Scaled by ``[W, H, W, H]`` first, converted second, then truncated toward zero (``int``).
    """
    scaled = boxes.float().cpu() * torch.tensor([width, height, width, height], dtype=torch.float32)
    return box_convert(scaled, in_fmt="cxcywh", out_fmt="xyxy").to(torch.int64).numpy()


def merge_masks(instance_masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Object masks (K, H, W) bool -> one id map (H, W), as ``SegTracker.add_mask``.

    K > 0: uint8, mask ``i`` (0-based) writes id ``i + 1``, later masks overwrite earlier
    ones (an id may vanish). K = 0: ``np.zeros(shape)``, float64 (the official no-box mask).
    """
    if len(instance_masks) == 0:
        return np.zeros(shape)
    if len(instance_masks) > 255:
        raise ValueError(f"{len(instance_masks)} boxes do not fit the official uint8 id map (max 255)")
    merged = np.zeros(shape, dtype=np.uint8)
    for obj_id, mask in enumerate(instance_masks, start=1):
        merged[mask] = obj_id
    return merged


@torch.inference_mode()
def detect_boxes(
    model: GroundingDinoForObjectDetection,
    processor: GroundingDinoProcessor,
    frames: np.ndarray,
    caption: str,
    box_threshold: float = BOX_THRESHOLD,
    batch_size: int = 8,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroundingDINO boxes of ``caption`` in every frame (official ``predict``).

    Args:
        frames: (F, H, W, 3) uint8 RGB.
        caption: the object text (``grounding_caption`` is applied here).
        box_threshold: keep queries whose max token probability is strictly above it.

    Returns:
        Per frame ``(boxes, scores)``: (K, 4) int64 pixel ``xyxy`` and (K,) float32, in query
        order.
    """
    height, width = frames.shape[1:3]
    size = processor.image_processor.size
    resized = grounding_size(height, width, size["shortest_edge"], size["longest_edge"])
    text = grounding_caption(caption)
    results = []
    for start in range(0, len(frames), batch_size):
        chunk = list(frames[start : start + batch_size])
        inputs = processor(
            images=chunk,
            text=[text] * len(chunk),
            return_tensors="pt",
            size={"height": resized[0], "width": resized[1]},
        )
        outputs = model(**inputs.to(model.device))
        scores = outputs.logits.float().sigmoid().amax(-1)  # b q
        for frame_scores, frame_boxes in zip(scores, outputs.pred_boxes):
            keep = frame_scores > box_threshold
            boxes = boxes_to_pixels(frame_boxes[keep], height, width)
            results.append((boxes, frame_scores[keep].cpu().numpy()))
    return results


def _best_mask_logits(
    model: SamModel, embeddings: torch.Tensor, boxes: torch.Tensor, mask_input: torch.Tensor | None
) -> torch.Tensor:
    """One ``SamPredictor.predict`` call per box: the best-IoU of three low-res mask logits.

    ``embeddings`` (K, C, h, w) (the frame's embedding per box), ``boxes`` (K, 1, 4) in
    the resized frame, ``mask_input`` (K, 1, 4h, 4w) or None -> (K, 4h, 4w).
    """
    out = model(image_embeddings=embeddings, input_boxes=boxes, input_masks=mask_input, multimask_output=True)
    best = out.iou_scores[:, 0].argmax(-1)  # k
    return out.pred_masks[torch.arange(len(boxes), device=best.device), 0, best]  # k 4h 4w


@torch.inference_mode()
def segment_boxes(
    model: SamModel, processor: SamProcessor, frames: np.ndarray, boxes: list[np.ndarray], batch_size: int = 8
) -> list[np.ndarray]:
    """SAM masks of each frame's boxes (official ``Segmentor.segment_with_box``).

    Args:
        frames: (F, H, W, 3) uint8 RGB.
        boxes: per frame (K_f, 4) pixel ``xyxy``.
        batch_size: frames per image-encoder call and boxes per decoder call.

    Returns:
        Per frame (K_f, H, W) bool.
    """
    height, width = frames.shape[1:3]
    masks = []
    for start in range(0, len(frames), batch_size):
        inputs = processor(images=list(frames[start : start + batch_size]), return_tensors="pt")
        embeddings = model.get_image_embeddings(inputs["pixel_values"].to(model.device))  # b c h w
        for j, frame_boxes in enumerate(boxes[start : start + batch_size]):
            if len(frame_boxes) == 0:
                masks.append(np.zeros((0, height, width), dtype=bool))
                continue
            new_h, new_w = inputs["reshaped_input_sizes"][j].tolist()
            scale = np.array([new_w / width, new_h / height, new_w / width, new_h / height])
            resized_boxes = torch.as_tensor(frame_boxes * scale, dtype=torch.float32, device=model.device)
            frame_masks = []
            for b in range(0, len(frame_boxes), batch_size):
                box_chunk = resized_boxes[b : b + batch_size, None]  # k 1 4
                frame_embedding = embeddings[j : j + 1].expand(len(box_chunk), -1, -1, -1)  # k c h w
                first = _best_mask_logits(model, frame_embedding, box_chunk, None)
                second = _best_mask_logits(model, frame_embedding, box_chunk, first[:, None])
                full = processor.post_process_masks(
                    [second[:, None].float()],
                    inputs["original_sizes"][j : j + 1],
                    inputs["reshaped_input_sizes"][j : j + 1],
                )[0]  # k 1 H W
                frame_masks.append(full[:, 0].cpu().numpy())
            masks.append(np.concatenate(frame_masks))
    return masks


_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


@dataclass(eq=False)
class DetectionModels:
    """GroundingDINO and SAM with their processors, as loaded from ``--models``.

    ``autocast``: run them under float16 autocast (the official CUDA run).
    """

    detector: GroundingDinoForObjectDetection
    detector_processor: GroundingDinoProcessor
    segmenter: SamModel
    segmenter_processor: SamProcessor
    autocast: bool = False
    tracker_model: DeAOT | None = None

    def deaot(self, models_dir: Path | str) -> DeAOT:
        """The DeAOT network from ``models_dir/ckpt/R50_DeAOTL_PRE_YTB_DAV.pth``, loaded once."""
        if self.tracker_model is None:
            path = require_model(models_dir, DEAOT_FILE, DEAOT_WHAT, DEAOT_SOURCE)
            self.tracker_model = load_deaot(path).to(self.detector.device)
        return self.tracker_model

    @classmethod
    def shared(cls, models_dir: Path | str, device: torch.device, fp32: bool = False) -> DetectionModels:
        """One loaded copy per (folders, device, precision) while any metric holds it (count and
        color share it; about 1 GB of float32 weights)."""
        key = (str(Path(models_dir).resolve()), str(device), fp32)
        models = _SHARED.get(key)
        if models is None:
            models = cls.load(models_dir, device)
            models.autocast = device.type == "cuda" and not fp32
            _SHARED[key] = models
        return models

    @classmethod
    def load(cls, models_dir: Path | str, device: Any) -> DetectionModels:
        """``models_dir/grounding-dino-tiny`` and ``models_dir/sam-vit-base``, float32 weights.

        The processors use the PIL backend (resizing as the official PIL-based transforms).

        Raises:
            ModelNotFoundError: a folder (its ``config.json``) is missing.
        """
        device = torch.device(device)
        gd = require_model(
            models_dir,
            f"{GROUNDING_DINO_DIR}/config.json",
            "GroundingDINO SwinT-OGC (transformers folder)",
            GROUNDING_DINO_SOURCE,
        ).parent
        sam = require_model(
            models_dir, f"{SAM_DIR}/config.json", "SAM ViT-B (transformers folder)", SAM_SOURCE
        ).parent
        detector = GroundingDinoForObjectDetection.from_pretrained(gd, local_files_only=True)
        segmenter = SamModel.from_pretrained(sam, local_files_only=True)
        return cls(
            detector.to(device).eval(),
            GroundingDinoProcessor.from_pretrained(gd, local_files_only=True, backend="pil"),
            segmenter.to(device).eval(),
            SamProcessor.from_pretrained(sam, local_files_only=True, backend="pil"),
        )


def detect_and_segment(
    models: DetectionModels,
    frames: np.ndarray,
    caption: str,
    box_threshold: float = BOX_THRESHOLD,
    batch_size: int = 8,
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Id maps of ``caption``'s objects in each frame and the boxes behind them.

    Args:
        frames: (F, H, W, 3) uint8 RGB, the processed frames.

    Returns:
        ``(masks, detections)``: F id maps (H, W) (uint8 ids 1..K, or float64 zeros when a
        frame has no box) and F ``(boxes, scores)`` from :func:`detect_boxes`.
    """
    device = models.detector.device
    with torch.autocast(device.type, dtype=torch.float16, enabled=models.autocast):
        detections = detect_boxes(
            models.detector, models.detector_processor, frames, caption, box_threshold, batch_size
        )
        boxes = [b for b, _ in detections]
        instances = segment_boxes(models.segmenter, models.segmenter_processor, frames, boxes, batch_size)
    masks = [merge_masks(m, frames.shape[1:3]) for m in instances]
    return masks, detections


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


class _DetectionMetric(Metric):
    """Shared part of Count and Color: models, applicability, the per-frame id maps."""

    attribute: ClassVar[str]
    options = ("detection",)

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
        detection: str = "track",
    ) -> None:
        super().__init__(models_dir, device, mode, batch_size, fp32)
        if detection not in DETECTION_SCHEDULES:
            raise EvalInputError(
                f"unknown detection schedule {detection!r}; choose one of {DETECTION_SCHEDULES}"
            )
        self.detection = detection
        self.models = DetectionModels.shared(self.models_dir, self.device, fp32)
        self.box_threshold = BOX_THRESHOLD
        self.record_weights(f"{GROUNDING_DINO_DIR}/")
        self.record_weights(f"{SAM_DIR}/")
        precision = "float16 autocast" if self.models.autocast else "float32"
        self.runtime["dtypes"].update(grounding_dino=precision, sam=precision)
        self.runtime["detection"] = detection
        self.tracker = None
        if detection == "track":
            self.tracker = DeAOTTracker(self.models.deaot(self.models_dir), autocast=self.models.autocast)
            self.record_weights(DEAOT_FILE)
            self.runtime["dtypes"]["deaot"] = precision

    @classmethod
    def required_files(
        cls, mode: str = "compat", detection: str = "track", **options: Any
    ) -> list[ModelFile]:
        files = [
            ModelFile(
                f"{GROUNDING_DINO_DIR}/",
                "GroundingDINO SwinT-OGC (transformers folder)",
                GROUNDING_DINO_SOURCE,
                (cls.name,),
            ),
            ModelFile(f"{SAM_DIR}/", "SAM ViT-B (transformers folder)", SAM_SOURCE, (cls.name,)),
        ]
        if detection == "track":
            files.append(ModelFile(DEAOT_FILE, DEAOT_WHAT, DEAOT_SOURCE, (cls.name,)))
        return files

    def applies_to(self, meta: dict) -> bool:
        return bool(meta.get("attributes", {}).get(self.attribute))

    def _detect(self, video: VideoInput, meta: dict) -> tuple[str, dict, np.ndarray, list[np.ndarray]]:
        """``(ground truth word, shared record, processed frames, id maps)``."""
        truth, caption = parse_attribute(meta["attributes"][self.attribute])
        indices = np.arange(0, len(video.frames), FRAME_STEP)
        frames = video.frames[indices]
        roles = frame_roles(len(frames)) if self.tracker is not None else ["detect"] * len(frames)
        detected = [i for i, role in enumerate(roles) if role != "track"]
        det_masks, found = detect_and_segment(
            self.models, frames[detected], caption, self.box_threshold, self.batch_size
        )
        if self.tracker is None:
            masks = det_masks
        else:
            masks = track_video(self.tracker, frames, dict(zip(detected, det_masks)), self.mode)
        boxes: list = [None] * len(frames)
        scores: list = [None] * len(frames)
        for i, (frame_boxes, frame_scores) in zip(detected, found):
            boxes[i], scores[i] = frame_boxes.tolist(), frame_scores.tolist()
        record = {
            "object": caption,
            "detection": self.detection,
            "frame_indices": indices.tolist(),
            "frame_roles": roles,
            "boxes": boxes,
            "box_scores": scores,
            "mask_dtypes": [str(m.dtype) for m in masks],
            "det_count_frames": scoring.count_per_frame(masks),
        }
        return truth, record, frames, masks

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        mean, n = mean_of(records, self.histogram_key)
        return {"value": mean * 100, "n": n, "official": {self.histogram_key: mean}}


@register_metric
class CountMetric(_DetectionMetric):
    """Count score over the prompts with a ``count`` attribute (50); reported as mean x 100.

    Record: the shared detection fields plus ``gt_count`` and ``count_score`` (0..1).
    """

    name = "count"
    attribute = "count"
    histogram_key = "count_score"

    def score(self, video: VideoInput, meta: dict) -> dict:
        truth, record, _, masks = self._detect(video, meta)
        return {**record, "gt_count": float(truth), "count_score": scoring.count_score(masks, truth)}


@register_metric
class ColorMetric(_DetectionMetric):
    """Color score over the prompts with a ``color`` attribute (46); reported as mean x 100.

    Record: the shared detection fields plus ``gt_color``, ``per_frame_avg_hue`` (null for
    NaN), ``per_frame_color`` (compat: NaN falls through to ``"red"``; fixed: null) and
    ``color_score`` (0..1).
    """

    name = "color"
    attribute = "color"
    histogram_key = "color_score"

    def score(self, video: VideoInput, meta: dict) -> dict:
        truth, record, frames, masks = self._detect(video, meta)
        if self.mode == "compat":
            hues = [scoring.frame_avg_hue(f, m) for f, m in zip(frames, masks)]
            colors = [scoring.hue_to_color(h) for h in hues]
            value = scoring.color_score(frames, masks, truth)
        else:
            hues = [scoring.circular_mean_hue(f, m) for f, m in zip(frames, masks)]
            colors = [None if math.isnan(h) else scoring.hue_to_color(h) for h in hues]
            value = scoring.color_score_fixed(frames, masks, truth)
        return {
            **record,
            "gt_color": truth,
            "per_frame_avg_hue": [_json_float(h) for h in hues],
            "per_frame_color": colors,
            "color_score": value,
        }
