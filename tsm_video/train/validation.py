"""Validation clips during training: fixed prompts → DDIM → VAE decode → mp4, on the main process."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from tsm_video.config import RunConfig
from tsm_video.data.video_io import write_mp4
from tsm_video.diffusion import VC2Schedule, ddim_sample

__all__ = ["write_validation_clips", "to_uint8_video"]


def to_uint8_video(pixels: torch.Tensor):
    """(3, F, H, W) in [-1, 1] → (F, H, W, 3) uint8 numpy."""
    frames = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()  # f h w c


@torch.no_grad()
def write_validation_clips(
    cfg: RunConfig, model: torch.nn.Module, out_dir: Path, accelerator: Accelerator
) -> None:
    """One clip per ``train.validation.prompts`` at the training resolution; ``<i>.mp4`` in ``out_dir``.

    Uses its own seeded generator (the training RNG is untouched) and restores train mode.
    """
    if not accelerator.is_main_process:
        return
    v, d = cfg.train.validation, cfg.data
    was_training = model.training
    model.eval()
    device = accelerator.device
    generator = torch.Generator().manual_seed(v.seed)
    with accelerator.autocast():
        cond = model.encode_text(list(v.prompts))  # (P, 77, D)
        uncond = model.encode_text([""])  # (1, 77, D)
        shape = (len(v.prompts), model.latent_channels, d.num_frames, d.height // 8, d.width // 8)
        x_T = torch.randn(shape, generator=generator).to(device)
        z = ddim_sample(
            model.predict_noise,
            x_T,
            cond,
            uncond,
            fps=cfg.generate.fps,
            steps=v.steps,
            eta=0.0,
            guidance_scale=v.guidance_scale,
            schedule=VC2Schedule(cfg.tsm.num_timesteps),
            generator=generator,
        )
        video = model.decode(z)  # (P, 3, F, H, W)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(video):
        write_mp4(out_dir / f"{i:02d}.mp4", to_uint8_video(clip), fps=cfg.generate.fps)
    (out_dir / "prompts.txt").write_text("\n".join(v.prompts) + "\n")
    model.train(was_training)
