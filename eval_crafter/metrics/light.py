"""The light backend: colour, count and amplitude without learned models.

For the demo's synthetic domain (``data_tools.synth``: flat shapes on a dark background),
*not* EvalCrafter numbers; reports label it "light". The segmenter (saturation / brightness
threshold + connected components) stands in for GroundingDINO + SAM + DeAOT and the
Farneback optical flow for RAFT; the scoring rules are the official ones (``compat``) or
their fixed twins (``fixed``), exactly as the full backend applies them. Frames are
processed as the official detection path does: every 5th frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from eval_crafter import scoring
from eval_crafter.metrics.amplitude import amplitude_aggregate, amplitude_record
from eval_crafter.metrics.base import Metric, VideoInput, mean_of
from eval_crafter.metrics.registry import register_metric

__all__ = [
    "FRAME_STEP",
    "LIGHT_TRAVEL_THRESHOLD",
    "segment_shapes",
    "farneback_flows",
    "foreground_travel",
    "LightColor",
    "LightCount",
    "LightAmplitude",
]

FRAME_STEP = 5  # the official video_detection keeps frames 0, 5, 10, ...
# synth speeds move shapes 0.2 ("slow") or 0.6 ("fast") of the frame side over a clip
LIGHT_TRAVEL_THRESHOLD = 0.4


def segment_shapes(frame_rgb: np.ndarray, min_area: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 object ids 1..K (0 = background).

    Foreground: saturated pixels (S > 80 and V > 60) or pixels whose brightness differs
    from the frame's median brightness by more than 60 (white / grey shapes); objects are
    its 8-connected components of at least ``min_area`` pixels, numbered in scan order.
    """
    hsv = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)
    sat, val = hsv[..., 1].astype(np.int16), hsv[..., 2].astype(np.int16)
    foreground = ((sat > 80) & (val > 60)) | (np.abs(val - np.median(val)) > 60)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    ids = np.zeros(n, dtype=np.uint8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    if len(keep) > 255:
        raise ValueError(f"{len(keep)} objects in one frame; uint8 ids hold 255")
    ids[keep] = np.arange(1, len(keep) + 1)
    return ids[labels]


def _sampled(video: VideoInput) -> tuple[np.ndarray, list[np.ndarray]]:
    frames = video.frames[::FRAME_STEP]
    return frames, [segment_shapes(f) for f in frames]


def farneback_flows(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB -> (F-1, 2, H, W) float32 Farneback flow between consecutive frames."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [
        cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0) for a, b in zip(gray, gray[1:])
    ]
    if not flows:
        return np.zeros((0, 2) + frames.shape[1:3], dtype=np.float32)
    return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32)  # p 2 h w


def foreground_travel(flows: np.ndarray, masks: list[np.ndarray]) -> float:
    """Distance the shapes travel over the clip as a fraction of the frame side along the motion.

    Mean flow vector over each pair's foreground (the first frame's mask), summed over pairs;
    its dominant axis picks the side. NaN when no pair has foreground.
    """
    steps = [flow[:, mask != 0].mean(1) for flow, mask in zip(flows, masks) if (mask != 0).any()]
    if not steps:
        return math.nan
    move = np.sum(steps, 0) * (len(flows) / len(steps))  # (dx, dy) over all pairs
    h, w = flows.shape[2:]
    return float(abs(move[0]) / w if abs(move[0]) >= abs(move[1]) else abs(move[1]) / h)


class _LightMetric(Metric):
    backend = "light"
    attribute: str

    def __init__(
        self,
        models_dir: Path | str | None = None,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        super().__init__(models_dir or ".", device, mode, batch_size, fp32)

    def applies_to(self, meta: dict) -> bool:
        return bool(meta["attributes"].get(self.attribute))


@register_metric
class LightColor(_LightMetric):
    """Colour score of the segmented shapes (official hue rule), x100."""

    name = "color"
    attribute = "color"
    histogram_key = "color_score"

    def score(self, video: VideoInput, meta: dict) -> dict:
        frames, masks = _sampled(video)
        gt = meta["attributes"]["color"].split()[0]
        rule = scoring.color_score_fixed if self.mode == "fixed" else scoring.color_score
        return {"color_score": rule(frames, masks, gt), "gt_color": gt, "frames": len(frames)}

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        value, n = mean_of(records, "color_score")
        return {"value": value * 100, "n": n, "official": {"color_score": value}}


@register_metric
class LightCount(_LightMetric):
    """Count score of the segmented shapes, x100."""

    name = "count"
    attribute = "count"
    histogram_key = "count_score"

    def score(self, video: VideoInput, meta: dict) -> dict:
        _, masks = _sampled(video)
        gt = meta["attributes"]["count"].split()[0]
        return {
            "count_score": scoring.count_score(masks, gt),
            "det_count_frames": scoring.count_per_frame(masks),
            "gt_count": float(gt),
        }

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        value, n = mean_of(records, "count_score")
        return {"value": value * 100, "n": n, "official": {"count_score": value}}


@register_metric
class LightAmplitude(_LightMetric):
    """Amplitude from Farneback flow: the official record, plus the shapes' own travel.

    ``flow_score`` / ``motion_ac_score`` follow the official rule on whole-frame flow (no
    padding needed); ``light_amp_pred`` classifies the foreground travel against
    :data:`LIGHT_TRAVEL_THRESHOLD`, which is what separates the synthetic speeds, and
    ``light_motion_ac_score`` scores it against ``amp``.
    """

    name = "amplitude"
    attribute = "amp"
    histogram_key = "travel"

    def applies_to(self, meta: dict) -> bool:
        return True  # flow_score covers every video, as officially

    def score(self, video: VideoInput, meta: dict) -> dict:
        flows = farneback_flows(video.frames)
        record = amplitude_record(flows, meta, video.frames.shape[1:3], self.mode)
        travel = foreground_travel(flows, [segment_shapes(f) for f in video.frames[:-1]])
        record["travel"] = travel
        record["light_amp_pred"] = "large" if travel > LIGHT_TRAVEL_THRESHOLD else "slow"
        if "amp" in record:
            record["light_motion_ac_score"] = int(record["light_amp_pred"] == record["amp"])
        return record

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        out = amplitude_aggregate(records)
        light, n = mean_of(records, "light_motion_ac_score")
        out.update(value=light * 100, n=n, official_rule_value=out["value"])
        return out
