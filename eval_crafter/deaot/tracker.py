"""The DeAOT tracker as EvalCrafter's Segment-and-Track calls it.

Frames are RGB uint8 (H, W, 3). The network input is the frame resized (bicubic, cv2) so
that each side is 16k + 1 (long side at most 1040 px first), scaled to [0, 1] and
normalised with the ImageNet mean and std in float64, then cast to float32 (the official
``MultiRestrictSize`` + ``MultiToTensor``). Reference masks are resized to the input with
nearest-neighbour interpolation; predicted logits are resized to the frame (bilinear,
``align_corners=True``) and the argmax is the tracked id map; that map, resized back to
the input (nearest), updates the memories.

``add_reference(frame, mask, num_objects)``: ``num_objects`` is the largest id tracked
so far (``SegTracker.get_obj_num``); groups of 10 ids get their own memory. A group that
already holds as many ids as now assigned to it only refreshes its short-term memory with
the mask (the vendored ``DeAOTInferEngine.add_reference_frame``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eval_crafter.deaot.engine import DeAOTEngine, group_sizes, merge_group_logits, split_mask
from eval_crafter.deaot.model import DeAOT

__all__ = ["MAX_LONG_EDGE", "tracker_input_size", "preprocess_frame", "DeAOTTracker"]

MAX_LONG_EDGE = 800 * 1.3  # TEST_MAX_LONG_EDGE
_STRIDE = 16
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def tracker_input_size(height: int, width: int) -> tuple[int, int]:
    """The network input ``(h, w)`` for a frame: long side capped at 1040, then each side
    rounded (numpy ``around``) to the nearest ``16k + 1``."""
    scale = 1.0
    if max(height, width) > MAX_LONG_EDGE:
        scale = MAX_LONG_EDGE / max(height, width)
    sizes = []
    for side in (int(height * scale), int(width * scale)):
        if (side - 1) % _STRIDE:
            side = int(np.around((side - 1) / _STRIDE) * _STRIDE + 1)
        sizes.append(side)
    return sizes[0], sizes[1]


def preprocess_frame(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 network input (see module docstring)."""
    import cv2

    h, w = tracker_input_size(*frame.shape[:2])
    if (h, w) != frame.shape[:2]:
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)
    x = (frame / 255.0 - np.array(_MEAN)) / np.array(_STD)  # float64, as the official transform
    return torch.from_numpy(x.transpose(2, 0, 1).copy()).float()[None]


class DeAOTTracker:
    """Reference frames, tracking and memory updates over groups of 10 ids.

    Args:
        model: the network (its device is used).
        autocast: run under float16 autocast (the official CUDA run).
    """

    def __init__(self, model: DeAOT, autocast: bool = False) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.autocast = autocast
        self.restart()

    def restart(self) -> None:
        """Forget every memory (a new video)."""
        self.engines: list[DeAOTEngine] = []
        self.num_objects = 0
        self.input_size: tuple[int, int] | None = None

    def autocast_context(self):
        """The float16 autocast context when ``autocast`` (else a no-op context)."""
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast)

    def _input(self, frame: np.ndarray) -> torch.Tensor:
        image = preprocess_frame(frame).to(self.device)
        self.input_size = tuple(image.shape[-2:])
        return image

    @torch.no_grad()
    def add_reference(self, frame: np.ndarray, mask: np.ndarray, num_objects: int) -> None:
        """``mask`` (H, W) ids (any numeric dtype) of ``frame``; ``num_objects`` = largest id tracked."""
        with self.autocast_context():
            image = self._input(frame)
            ids = torch.from_numpy(np.asarray(mask).astype(np.int32)).float()[None, None].to(self.device)
            ids = F.interpolate(ids, size=image.shape[-2:], mode="nearest")
            self.num_objects = num_objects
            sizes = group_sizes(num_objects)
            while len(self.engines) < len(sizes):
                self.engines.append(DeAOTEngine(self.model))
            features = None
            for engine, part, size in zip(self.engines, split_mask(ids, len(self.engines)), sizes):
                if engine.num_objects is None or engine.num_objects < size:
                    features = self.model.encode_image(image) if features is None else features
                    engine.add_reference(features, part, size)
                else:
                    engine.update_memory(part)
                features = engine.features

    @torch.no_grad()
    def track(self, frame: np.ndarray, update_memory: bool = False) -> np.ndarray:
        """The tracked ids of ``frame``: (H, W) uint8 argmax over the merged identity logits."""
        if not self.engines:
            raise RuntimeError("track() before any add_reference()")
        with self.autocast_context():
            features = self.model.encode_image(self._input(frame))
            for engine in self.engines:
                engine.propagate(features)
            logits = merge_group_logits([e.logits(frame.shape[:2]) for e in self.engines])
            labels = torch.argmax(logits, dim=1, keepdim=True).float()
            if update_memory:
                resized = F.interpolate(labels, size=self.input_size, mode="nearest")
                for engine, part in zip(self.engines, split_mask(resized, len(self.engines))):
                    engine.update_memory(part)
        return labels[0, 0].cpu().numpy().astype(np.uint8)
