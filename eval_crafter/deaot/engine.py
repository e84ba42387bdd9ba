"""DeAOT memory for one group of up to 10 objects, and the combination of groups.

What the official ``DeAOTEngine`` / ``AOTInferEngine`` keep (as vendored by EvalCrafter):

- a **reference frame** (``add_reference``) runs the propagation with the frame's own
  identity embedding; its per-layer keys/values become the long-term memory (appended in
  front of the existing one at a later reference) and the short-term memory;
- each **tracked frame** (``propagate``) attends to both memories; ``logits`` decodes its
  identity logits, with ids above the group's object count pushed to -1e10 (-1e4 in lower
  precision);
- ``update_memory`` with the frame's predicted mask replaces the short-term memory by this
  frame's keys/values plus its identity values; the long-term memory grows only every
  ``long_term_gap`` frames (EvalCrafter: 9999, i.e. never within a video).

More than 10 ids are split into groups of 10 (``split_mask``), each with its own memory;
their logits are merged by ``merge_group_logits`` (product of background probabilities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eval_crafter.deaot.layers import seq_to_2d
from eval_crafter.deaot.model import MAX_OBJECTS, DeAOT

__all__ = [
    "MAX_OBJECTS_PER_GROUP",
    "DeAOTEngine",
    "one_hot_ids",
    "group_sizes",
    "split_mask",
    "merge_group_logits",
]

MAX_OBJECTS_PER_GROUP = MAX_OBJECTS


def one_hot_ids(mask: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) float ids -> (1, 11, H, W) float one-hot (ids above 10 match nothing)."""
    ids = torch.arange(MAX_OBJECTS + 1, device=mask.device).view(1, -1, 1, 1)
    return (mask == ids).float()


def group_sizes(num_objects: int) -> list[int]:
    """Objects per group: ``max(ceil(n / 10), 1)`` groups of 10, the last holding the rest
    (one group holds all ``n``, 0 included, as the official ``separate_mask``)."""
    groups = max(math.ceil(num_objects / MAX_OBJECTS), 1)
    if groups == 1:
        return [num_objects]
    sizes = [MAX_OBJECTS] * groups
    if num_objects % MAX_OBJECTS:
        sizes[-1] = num_objects % MAX_OBJECTS
    return sizes


def split_mask(mask: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Ids 10g+1..10g+10 of ``mask`` renumbered 1..10 for group g (one group: unchanged)."""
    if groups == 1:
        return [mask]
    parts = []
    for g in range(groups):
        first, last = g * MAX_OBJECTS + 1, (g + 1) * MAX_OBJECTS
        inside = ((mask >= first) & (mask <= last)).float()
        parts.append((inside * mask - first + 1) * inside)
    return parts


def merge_group_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """Groups' (B, 11, H, W) logits -> (B, 1 + 10 * groups, H, W): background probability is the
    product of the groups', object probabilities are kept; clamped to [1e-5, 1 - 1e-5], logit."""
    if len(logits) == 1:
        return logits[0]
    probs = [torch.softmax(x, dim=1) for x in logits]
    background = torch.prod(torch.cat([p[:, :1] for p in probs], dim=1), dim=1, keepdim=True)
    merged = torch.cat([background] + [p[:, 1 : 1 + MAX_OBJECTS] for p in probs], dim=1)
    return torch.logit(merged.clamp(1e-5, 1 - 1e-5))


def _append(new: list, old: list, max_frames: int) -> list:
    """Per layer and slot ``cat([new, old])`` along tokens, ``old`` cut to ``max_frames - 1`` frames."""
    tokens = new[0][0].shape[0]
    out = []
    for new_layer, old_layer in zip(new, old):
        slots = []
        for a, b in zip(new_layer, old_layer):
            if a is None or b is None:
                slots.append(None)
                continue
            if b.shape[0] >= max_frames * tokens:
                b = b[: (max_frames - 1) * tokens]
            slots.append(torch.cat([a, b], dim=0))
        out.append(slots)
    return out


class DeAOTEngine:
    """Memories of one object group.

    Args:
        model: the network.
        long_term_gap: frames between long-term memory updates (EvalCrafter 9999).
        max_long_term: frames kept in the long-term memory (EvalCrafter 9999).
    """

    def __init__(self, model: DeAOT, long_term_gap: int = 9999, max_long_term: int = 9999) -> None:
        self.model = model
        self.long_term_gap, self.max_long_term = long_term_gap, max_long_term
        self.num_objects: int | None = None
        self.frame_step, self.last_memory_step = 0, -1
        self.long_term: list | None = None
        self.short_term: list | None = None
        self.features: list[torch.Tensor] | None = None
        self.output: torch.Tensor | None = None
        self.memories: list | None = None

    def add_reference(self, features: list[torch.Tensor], mask: torch.Tensor, num_objects: int) -> None:
        """A reference frame: ``features`` from ``DeAOT.encode_image``, ``mask`` (1, 1, h, w) ids at
        the network input size, ``num_objects`` ids in this group."""
        self.num_objects = num_objects
        id_emb = self.model.identity_embedding(one_hot_ids(mask))
        self.features = features
        self.output, self.memories = self.model.propagate(features, None, None, id_emb)
        long_term = [layer[1] for layer in self.memories]
        self.long_term = (
            long_term if self.long_term is None else _append(long_term, self.long_term, self.max_long_term)
        )
        self.last_memory_step = self.frame_step
        self.short_term = [layer[2] for layer in self.memories]

    def propagate(self, features: list[torch.Tensor]) -> None:
        """Match a new frame against the memories (call ``logits`` next)."""
        self.frame_step += 1
        self.features = features
        self.output, self.memories = self.model.propagate(features, self.long_term, self.short_term, None)

    def logits(self, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(1, 11, h, w) identity logits of the last frame, unused ids excluded; bilinearly
        resized (``align_corners=True``) to ``output_size`` if given."""
        logits = self.model.decode(self.output, self.features)
        logits[:, self.num_objects + 1 :] = -1e10 if logits.dtype == torch.float32 else -1e4
        if output_size is not None:
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=True)
        return logits

    def update_memory(self, mask: torch.Tensor) -> None:
        """Make the last frame, with its ids ``mask`` (1, 1, h, w) at the input size, the
        short-term memory (and every ``long_term_gap`` frames part of the long-term one)."""
        id_emb = self.model.identity_embedding(one_hot_ids(mask))
        size_2d = tuple(self.features[-1].shape[-2:])
        current, short_term = [], []
        for layer, memories in zip(self.model.LSTT.layers, self.memories):
            key, value, _, id_features = memories[0]
            id_value = layer.identity_values(id_features, id_emb)
            current.append([key, value, None, id_value])
            short_term.append(
                [seq_to_2d(key, size_2d), seq_to_2d(value, size_2d), None, seq_to_2d(id_value, size_2d)]
            )
        self.short_term = short_term
        if self.frame_step - self.last_memory_step >= self.long_term_gap:
            self.long_term = _append(current, self.long_term, self.max_long_term)
            self.last_memory_step = self.frame_step
