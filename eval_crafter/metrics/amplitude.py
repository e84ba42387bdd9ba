"""Amplitude (motion_ac_score) and flow_score: RAFT flow between consecutive frames.

torchvision's ``raft_large`` loads the original ``raft-things.pth`` (princeton-vl/RAFT key
layout, converted by :func:`convert_raft_state_dict`) from ``<models>/RAFT/models/``. As
the official ``optical_flow_scores.py``: every consecutive pair, both frames replicate-
padded to a multiple of 8 (``InputPadder`` "sintel": centred), 20 refinement iterations,
``flow_up`` at the padded size, per pair ``mean |flow|``, per video the mean over pairs.
The record serves two official metrics: ``flow_score`` (every video) and
``motion_ac_score`` (the 50 prompts with an ``amp`` attribute).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import raft_large

from eval_crafter import scoring
from eval_crafter.metrics.base import Metric, ModelFile, VideoInput, mean_of, require_model
from eval_crafter.metrics.registry import register_metric
from tsm_video.data.video_frames import VideoFrames

__all__ = [
    "RAFT_FILE",
    "RAFT_URL",
    "convert_raft_state_dict",
    "MotionAmplitude",
    "amplitude_record",
    "amplitude_aggregate",
]

RAFT_FILE = "RAFT/models/raft-things.pth"
RAFT_URL = (
    "the RAFT release models.zip (https://github.com/princeton-vl/RAFT, "
    "download_models.sh; EvalCrafter checkpoints/RAFT/models/)"
)

# (pattern, replacement) applied in order to original RAFT keys ("module." stripped)
_RAFT_RULES = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(\w+_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(\w+_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(\w+_encoder)\.conv2\.", r"\1.conv."),
    (r"(layer\d\.\d)\.conv1\.", r"\1.convnormrelu1.0."),
    (r"(layer\d\.\d)\.norm1\.", r"\1.convnormrelu1.1."),
    (r"(layer\d\.\d)\.conv2\.", r"\1.convnormrelu2.0."),
    (r"(layer\d\.\d)\.norm2\.", r"\1.convnormrelu2.1."),
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])(\d)\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)


def convert_raft_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original RAFT (``raft-things.pth``) keys -> torchvision ``raft_large`` keys.

    Strips the DataParallel ``module.`` prefix and drops ``layerX.Y.norm3.*``: in the
    original batch-norm encoder that norm is registered twice (also as ``downsample.1``),
    so the file holds it under both names.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if re.search(r"layer\d\.\d\.norm3\.", key):
            continue
        for pattern, replacement in _RAFT_RULES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def amplitude_record(flows: np.ndarray, meta: dict, frame_hw: tuple[int, int], mode: str) -> dict:
    """One video's record from its (P, 2, Hp, Wp) flows (shared with the light backend)."""
    pair_means = scoring.pair_flow_means(flows)
    amp = meta["attributes"].get("amp", "")
    if mode == "fixed":
        flow, pred, hit = scoring.motion_ac_score_fixed(flows, amp, frame_hw)
    else:
        flow, pred, hit = scoring.motion_ac_score(flows, amp)
    record = {"pair_means": pair_means, "flow_score": flow, "amp_pred": pred, "frame_hw": list(frame_hw)}
    if amp:
        record["amp"] = amp
        record["motion_ac_score"] = hit
    return record


def amplitude_aggregate(records: dict[str, dict]) -> dict:
    """motion_ac_score over the ``amp`` prompts (value x100) and flow_score over all videos."""
    motion, n_amp = mean_of(records, "motion_ac_score")
    flow, n_all = mean_of(records, "flow_score")
    return {
        "value": motion * 100,
        "n": n_amp,
        "flow_score": flow,
        "n_flow": n_all,
        "official": {"motion_ac_score": motion, "flow_score": flow},
    }


@register_metric
class MotionAmplitude(Metric):
    """RAFT amplitude classification (value = motion_ac_score x100) + mean flow."""

    name = "amplitude"
    histogram_key = "flow_score"
    iters = 20

    def __init__(
        self,
        models_dir: Path | str,
        device: Any = "cpu",
        mode: str = "compat",
        batch_size: int = 8,
        fp32: bool = False,
    ) -> None:
        super().__init__(models_dir, device, mode, batch_size, fp32)
        path = require_model(self.models_dir, RAFT_FILE, "RAFT (things) weights", RAFT_URL)
        self.model = raft_large(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(convert_raft_state_dict(state))
        self.model.to(self.device).eval()  # float32: the official run leaves mixed_precision off
        self.record_weights(RAFT_FILE)
        self.record_dtype("raft", torch.float32)

    @classmethod
    def required_files(cls, mode: str = "compat", **options: Any) -> list[ModelFile]:
        return [ModelFile(RAFT_FILE, "RAFT (things) weights", RAFT_URL, (cls.name,))]

    @torch.no_grad()
    def flows(self, frames: np.ndarray | VideoFrames) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB -> (F-1, 2, Hp, Wp) float32 ``flow_up`` at the padded size.

        Frames are read one batch at a time (``frames[start:stop + 1]``, pairs within it), so a
        lazy :class:`VideoFrames` never holds more than a batch of full-size frames.
        """
        h, w = frames.shape[1:3]
        pad = scoring.sintel_padding(h, w)
        out = []
        for start in range(0, len(frames) - 1, self.batch_size):
            stop = min(start + self.batch_size, len(frames) - 1)
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start : stop + 1]))
            chunk = chunk.permute(0, 3, 1, 2).float()  # f 3 h w
            pair = [chunk[k : stop - start + k].to(self.device) for k in (0, 1)]
            first, second = (2 * (F.pad(x, pad, mode="replicate") / 255.0) - 1 for x in pair)
            out.append(self.model(first, second, num_flow_updates=self.iters)[-1].float().cpu().numpy())
        if not out:
            return np.zeros((0, 2, h + pad[2] + pad[3], w + pad[0] + pad[1]), dtype=np.float32)
        return np.concatenate(out, 0)

    def score(self, video: VideoInput, meta: dict) -> dict:
        return amplitude_record(self.flows(video.frames), meta, video.frames.shape[1:3], self.mode)

    def aggregate(self, records: dict[str, dict], metadata: dict) -> dict:
        return amplitude_aggregate(records)
