"""Writing a shipped demo weight file together with the recipe that produced it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from tsm_video.models.checkpoint_io import save_safetensors

__all__ = ["save_recipe_weights"]


def save_recipe_weights(
    state: dict[str, Tensor], path: Path, recipe: Any, stats: dict, command: str, **extra: str
) -> None:
    """Save ``state`` to ``path`` with the recipe (a dataclass), its training stats and the command
    that regenerates it in the safetensors metadata (``extra``: further string entries)."""
    meta = {"recipe": json.dumps(asdict(recipe)), "stats": json.dumps(stats), **extra, "command": command}
    save_safetensors(state, path, metadata=meta)
