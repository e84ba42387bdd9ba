"""Clips from fixed prompts with the model being trained: validation every N steps, and the demo.

``sample_clips`` runs the VC2 sampler (DDIM with classifier-free guidance on the empty prompt)
and decodes; TSM layers follow ``t`` through ``model.predict_noise``. It draws from its own
seeded generator, so the training RNG is untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from tsm_video.config import RunConfig
from tsm_video.data.video_io import write_mp4
from tsm_video.diffusion import VC2Schedule, ddim_sample
from tsm_video.generation.media import to_uint8_frames

__all__ = ["write_validation_clips", "sample_clips"]


@torch.no_grad()
def sample_clips(
    model: torch.nn.Module,
    prompts: list[str],
    size: tuple[int, int, int],
    steps: int,
    guidance_scale: float,
    fps: int,
    seed: int,
    eta: float = 0.0,
    num_timesteps: int = 1000,
) -> list[np.ndarray]:
    """One clip per prompt, ``size`` = (frames, height, width) → list of (F, H, W, 3) uint8.

    ``x_T`` and the sampler noise come from ``torch.Generator().manual_seed(seed)``, so two
    models sampled with the same seed start from the same noise (side-by-side comparisons).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    frames, height, width = size
    cond = model.encode_text(list(prompts))  # (P, 77, D)
    uncond = model.encode_text([""])  # (1, 77, D)
    shape = (len(prompts), model.unet.config["in_channels"], frames, height // 8, width // 8)
    x_T = torch.randn(shape, generator=generator).to(device)
    z = ddim_sample(
        model.predict_noise,
        x_T,
        cond,
        uncond,
        fps=fps,
        steps=steps,
        eta=eta,
        guidance_scale=guidance_scale,
        schedule=VC2Schedule(num_timesteps),
        generator=generator,
    )
    video = model.decode(z)  # (P, 3, F, H, W)
    model.train(was_training)
    return [to_uint8_frames(clip) for clip in video]


def write_validation_clips(
    cfg: RunConfig, model: torch.nn.Module, out_dir: Path, accelerator: Accelerator
) -> None:
    """``train.validation.prompts`` at the training clip size → ``out_dir/<i>.mp4`` (main process only)."""
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
            num_timesteps=cfg.tsm.num_timesteps,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        write_mp4(out_dir / f"{i:02d}.mp4", clip, fps=cfg.generate.fps)
    (out_dir / "prompts.txt").write_text("\n".join(v.prompts) + "\n")
