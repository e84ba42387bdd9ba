"""Prompt lists → files on disk: batching, resume, per-clip seeds, output formats, run manifest.

The mp4 is written last for each clip and atomically, so ``{id}.mp4`` existing means the clip
(and its optional gif/PNG) is complete; a resumed run skips exactly those ids. A killed run
leaves at most hidden temporary files, which never count as clips.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tsm_video.data.video_io import write_mp4
from tsm_video.errors import TSMVideoError

from .media import atomic_path, to_uint8_frames, write_frame_grid, write_gif
from .prompts import PromptItem, clip_seed

__all__ = [
    "ClipFn",
    "OutputOptions",
    "RunSummary",
    "ManifestError",
    "pending",
    "write_clip",
    "run_prompts",
    "check_manifest",
    "recorded_run",
]

ClipFn = Callable[[Sequence[str], Sequence[int]], torch.Tensor]
"""``(prompts, seeds) -> clips (B, 3, F, H, W)`` in ``[-1, 1]``; one batch of generation."""

MANIFEST = "generate.json"


class ManifestError(TSMVideoError, RuntimeError):
    """The output folder holds clips made with other settings; mixing them would be wrong."""


@dataclass(frozen=True)
class OutputOptions:
    """Which files each clip gets: ``{id}.mp4`` always, plus ``{id}.gif``, ``{id}.png`` (frame grid)
    and ``{id}.npy`` (the exact uint8 frames (F, H, W, 3), lossless; compare mode builds its grids
    from them)."""

    save_fps: float
    gif: bool = False
    grid_png: bool = False
    npy: bool = False
    image: bool = False
    """Image backbones: each item is ``{id}.png`` (its one frame; the completion mark instead of
    the mp4), and a run also writes ``grid.png`` of every image of its prompts."""

    @property
    def suffix(self) -> str:
        return ".png" if self.image else ".mp4"


@dataclass
class RunSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def pending(
    items: Sequence[PromptItem], out_dir: Path, suffix: str = ".mp4"
) -> tuple[list[PromptItem], list[str]]:
    """Split ``items`` into those still to generate and the ids whose ``{id}{suffix}`` already exists."""
    todo, done = [], []
    for item in items:
        if (out_dir / f"{item.id}{suffix}").is_file():
            done.append(item.id)
        else:
            todo.append(item)
    return todo, done


def write_clip(out_dir: Path, clip_id: str, frames: np.ndarray, options: OutputOptions) -> Path:
    """Write one clip's files (extras first, the mp4 last as the completion mark); returns the mp4.
    Images (``options.image``): ``{id}.png`` (+ ``{id}.npy``), the png last."""
    if options.image:
        if options.npy:
            with atomic_path(out_dir / f"{clip_id}.npy") as tmp:
                np.save(tmp, frames)
        write_frame_grid(out_dir / f"{clip_id}.png", frames[:1])
        return out_dir / f"{clip_id}.png"
    if options.gif:
        write_gif(out_dir / f"{clip_id}.gif", frames, options.save_fps)
    if options.grid_png:
        write_frame_grid(out_dir / f"{clip_id}.png", frames)
    if options.npy:
        with atomic_path(out_dir / f"{clip_id}.npy") as tmp:
            np.save(tmp, frames)
    return write_mp4(out_dir / f"{clip_id}.mp4", frames, options.save_fps)


def _has_clips(out_dir: Path) -> bool:
    """Any finished clip in ``out_dir`` or (compare runs) in one of its variant folders."""
    return any(out_dir.glob("*.mp4")) or any(out_dir.glob("*/*.mp4"))


def check_manifest(out_dir: Path, manifest: dict) -> bool:
    """Record what made the clips in ``out_dir/generate.json``; refuse a folder made otherwise.

    Shards of one run write identical manifests, so they may share a folder. A manifest beside
    no clip at all binds nothing (a run that failed before its first clip) and is replaced.
    Returns whether this call wrote the manifest.
    """
    path = out_dir / MANIFEST
    if path.is_file() and _has_clips(out_dir):
        old = json.loads(path.read_text())
        if old != manifest:
            keys = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            diffs = "; ".join(f"{k}: {old.get(k)!r} → {manifest.get(k)!r}" for k in keys)
            raise ManifestError(
                f"{out_dir} holds clips generated with other settings ({diffs}); "
                f"use a new --out folder, or delete {path} and its clips"
            )
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return True


@contextlib.contextmanager
def recorded_run(out_dir: Path, manifest: dict) -> Iterator[None]:
    """:func:`check_manifest`, then the run; if the run fails before any clip exists, the manifest
    this call wrote is removed again (a failed run leaves no ``generate.json`` behind)."""
    created = check_manifest(out_dir, manifest)
    try:
        yield
    except BaseException:
        if created and not _has_clips(out_dir):
            (out_dir / MANIFEST).unlink(missing_ok=True)
        raise


def _batches(items: Sequence[PromptItem], size: int) -> list[Sequence[PromptItem]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def run_prompts(
    clip_fn: ClipFn,
    items: Sequence[PromptItem],
    out_dir: str | Path,
    *,
    seed: int,
    batch_size: int,
    options: OutputOptions,
    progress: bool = True,
    steps_per_call: int | None = None,
) -> RunSummary:
    """Generate every item whose ``{id}.mp4`` is missing, ``batch_size`` prompts per call.

    Clip seeds are ``clip_seed(seed, prompt)``, so the clips do not depend on ``batch_size``,
    on which items were skipped, or on the shard. With ``steps_per_call`` (the sampler's steps),
    the progress bar counts denoising steps (``clip_fn`` then takes ``on_step``, called once per
    step), so even a single clip moves; without it, the bar counts clips.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, done = pending(items, out_dir, options.suffix)
    summary = RunSummary(skipped=done)
    batches = _batches(todo, batch_size)
    total = len(batches) * steps_per_call if steps_per_call else len(todo)
    unit = "step" if steps_per_call else "clip"
    with tqdm(total=total, unit=unit, disable=not progress, desc="generate") as bar:
        for batch in batches:
            bar.set_postfix_str(f"clips {len(summary.written)}/{len(todo)}")
            step = {"on_step": lambda i, t: bar.update(1)} if steps_per_call else {}
            clips = clip_fn([it.prompt for it in batch], [clip_seed(seed, it.prompt) for it in batch], **step)
            for item, clip in zip(batch, clips):
                write_clip(out_dir, item.id, to_uint8_frames(clip), options)
                summary.written.append(item.id)
            if not steps_per_call:
                bar.update(len(batch))
        bar.set_postfix_str(f"clips {len(summary.written)}/{len(todo)}")
    if options.image:
        write_image_grid(out_dir, items)
    return summary


def write_image_grid(out_dir: Path, items: Sequence[PromptItem], columns: int = 8) -> Path:
    """``out_dir/grid.png``: the items' ``{id}.png`` images tiled in prompt order."""
    images = np.stack([np.asarray(Image.open(out_dir / f"{it.id}.png").convert("RGB")) for it in items])
    write_frame_grid(out_dir / "grid.png", images, columns)
    return out_dir / "grid.png"
