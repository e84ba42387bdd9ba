"""What makes two stage-1 runs parts of the same recipe: the config keys that change what a run
learns, and the identity of the base weights. Per-expert interval files record both, and the
assembly of a scale refuses files that disagree (``tsm_video.train.intervals``).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from tsm_video.config import RunConfig, config_to_dict

__all__ = ["RECIPE_KEYS", "RECIPE_KEYS_ADDED", "recipe_of", "base_identity", "file_sha256"]

RECIPE_KEYS = (
    "run.seed",
    "model.backbone",
    "model.mixed_precision",
    "tsm.rank",
    "tsm.alpha",
    "tsm.targets",
    "tsm.text_lora",
    "tsm.num_timesteps",
    "data.num_frames",
    "data.frame_stride",
    "data.target_fps",
    "data.height",
    "data.width",
    "data.caption_dropout",
    "train.steps.foster",
    "train.lr",
    "train.weight_decay",
    "train.adam_betas",
    "train.max_grad_norm",
    "train.warmup_steps",
    "train.global_batch_size",
    "train.foster_schedule",
    "train.loss_weighting",
    "train.loss_weighting_gamma",
)
"""Config keys that change what a stage-1 expert learns. Left out on purpose: paths (jobs on
different machines mount data and checkpoints in different places), ``tsm.scales`` (an expert of
scale 8 is the same in ``[8, 1]`` and ``[8, 4, 2, 1]``), stage-2-only keys (router, gate),
the per-device batch (accumulation follows the machine count; the global batch is recorded) and
bookkeeping (workers, logging, checkpoints, validation, generation)."""

RECIPE_KEYS_ADDED = {"train.loss_weighting": "none", "train.loss_weighting_gamma": 5.0}
"""Recipe keys added after interval files were first written, with the value every older file
was trained with (a file that lacks the key reads as this value)."""


def recipe_of(cfg: RunConfig) -> dict:
    """``{dotted key: value}`` of :data:`RECIPE_KEYS` (JSON-serialisable)."""
    tree = config_to_dict(cfg)
    out = {}
    for key in RECIPE_KEYS:
        node = tree
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, streamed (cached per path, size and mtime within a process)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def base_identity(cfg: RunConfig) -> str:
    """The base weights a run starts from: ``sha256:<hex>`` of the file (the same bytes under any
    path), or ``random-init:seed=<s>`` for a seeded random init (tiny models)."""
    weights = cfg.base_weights()
    if weights is None:
        return f"random-init:seed={cfg.run.seed}"
    return f"sha256:{file_sha256(weights)}"
