"""Clips from fixed prompts with the model being trained: validation every N steps, and the demo.

``sample_clips`` runs the generation sampler (the backbone's ``sample`` with classifier-free
guidance on the empty prompt, then ``decode``); TSM layers follow ``t`` through ``predict``. It
draws from its own seeded generators, so the training RNG is untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from tsm_video.config import RunConfig
from tsm_video.data.video_io import write_mp4
from tsm_video.generation.media import to_uint8_frames, write_frame_grid
from tsm_video.generation.sampling import generate_clips
from tsm_video.generation.settings import GenerateSettings

__all__ = ["write_validation_clips", "sample_clips"]


def sample_clips(
    model: torch.nn.Module,
    prompts: list[str],
    size: tuple[int, int, int],
    steps: int,
    guidance_scale: float,
    fps: int,
    seed: int,
    eta: float = 0.0,
) -> list[np.ndarray]:
    """One clip per prompt, ``size`` = (frames, height, width) → list of (F, H, W, 3) uint8.

    Runs :func:`~tsm_video.generation.generate_clips` (the generation CLI's sampler) with clip
    ``i`` seeded ``seed + i``, so two models sampled with the same seed start from the same
    noise (side-by-side comparisons) and the training RNG is untouched.
    """
    frames, height, width = size
    settings = GenerateSettings(
        height=height,
        width=width,
        num_frames=frames,
        steps=steps,
        eta=eta,
        guidance_scale=guidance_scale,
        fps=fps,
    )
    was_training = model.training
    model.eval()
    try:
        video = generate_clips(model, list(prompts), [seed + i for i in range(len(prompts))], settings)
    finally:
        model.train(was_training)
    return [to_uint8_frames(clip) for clip in video]  # video: (P, 3, F, H, W)


def write_validation_clips(
    cfg: RunConfig, model: torch.nn.Module, out_dir: Path, accelerator: Accelerator
) -> None:
    """``train.validation.prompts`` at the training clip size → ``out_dir/<i>.mp4`` (images:
    ``<i>.png``; main process only)."""
    if not accelerator.is_main_process:
        return
    v, d = cfg.train.validation, cfg.data
    with accelerator.autocast():
        clips = sample_clips(
            model,
            list(v.prompts),
            (d.num_frames, d.height, d.width),
            v.steps,
            v.guidance_scale,
            cfg.generate.fps,
            v.seed,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        if model.modality == "image":  # one-frame clips: a PNG each
            write_frame_grid(out_dir / f"{i:02d}.png", clip)
        else:
            write_mp4(out_dir / f"{i:02d}.mp4", clip, fps=cfg.generate.fps)
    (out_dir / "prompts.txt").write_text("\n".join(v.prompts) + "\n")
