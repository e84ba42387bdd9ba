"""``torch.load(weights_only=True)`` for the official ``.pth`` files, mmengine metadata included.

mmengine (mmaction2) checkpoints carry a ``meta`` dict next to ``state_dict``; its
``message_hub`` holds ``mmengine.logging.history_buffer.HistoryBuffer`` objects whose
state is numpy arrays. ``weights_only=True`` refuses those globals, and mmengine is not a
dependency here. Rather than unpickling freely, :func:`load_checkpoint` allow-lists exactly
those names (:data:`METADATA_GLOBALS`) mapped to :class:`InertMetadata`, a stand-in that
accepts any constructor arguments and state and keeps nothing: no mmengine or numpy code
runs, and the metadata (which no metric reads) comes back as inert placeholders. Any other
global still fails with torch's "Unsupported global" message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["METADATA_GLOBALS", "InertMetadata", "load_checkpoint", "checkpoint_state_dict"]

METADATA_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)


class InertMetadata:
    """Placeholder for one pickled metadata object: ignores its arguments and its state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "InertMetadata()"


def load_checkpoint(path: Path | str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with :data:`METADATA_GLOBALS`
    allow-listed as :class:`InertMetadata`."""
    with torch.serialization.safe_globals([(InertMetadata, name) for name in METADATA_GLOBALS]):
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_state_dict(
    checkpoint: Any, path: Path | str, key: str = "state_dict"
) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: ``checkpoint[key]`` if present, else the checkpoint.

    Raises:
        ValueError: it is not a dict of tensors (e.g. metadata where weights should be).
    """
    state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state dict entries are not tensors: {bad[:5]}")
    return state
