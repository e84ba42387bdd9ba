"""The demo's tiny VAE: a committed, reproducible recipe for ``vc2-tiny``'s autoencoder weights.

``vc2-tiny`` is built with random weights, and a random VAE makes every decoded clip a noise
texture. This recipe trains its VAE (LDM ``AutoencoderKL`` objective without the perceptual and
GAN terms: per-pixel MSE reconstruction, shape pixels weighted ``foreground_weight`` ×, +
``kl_weight`` · KL to N(0, I)) on frames of the
synthetic shapes domains (``data_tools.synth``, domains A and B) rendered at the demo's 32 × 32,
so the shapes it learns to keep, colour included, are the demo's (radius 2 px); then it rescales
the latent space so that ``scale_factor`` (0.18215, as in VC2) maps posterior means to unit standard
deviation — the assumption the diffusion schedule makes. The rescaling is exact: the encoder's
mean rows (and log-variance bias) are multiplied into ``quant_conv`` and divided out of
``post_quant_conv``, so reconstructions are unchanged.

``python -m tsm_video.demo.vae`` regenerates :data:`VAE_WEIGHTS` (about 4 MB, official
``first_stage_model.*`` keys) in minutes (9.5 min on one core of a busy 2-core machine);
:func:`compose_checkpoint` puts them into a seeded random ``vc2-tiny`` checkpoint that
``model.checkpoint`` can name.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tsm_video.demo.recipe_io import save_recipe_weights
from tsm_video.models.checkpoint_io import read_state_dict, save_safetensors

__all__ = ["VAE_WEIGHTS", "VAERecipe", "train_tiny_vae", "synthetic_frames", "compose_checkpoint"]

VAE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "vc2_tiny_vae.safetensors"
_PREFIX = "first_stage_model."  # the VAE's key prefix in an official VC2 checkpoint


@dataclass(frozen=True)
class VAERecipe:
    """Everything that determines the shipped weights."""

    videos_per_domain: int = 256  # synthetic videos of each of domains "a" and "b"
    size: int = 32  # frame side in pixels: the demo's and the study's, so shapes have their size
    num_frames: int = 4  # frames per video (more videos rather than more frames of each)
    crop: int = 32  # random square crops the VAE trains on (= size: whole frames)
    steps: int = 2000
    batch_size: int = 16  # frames per step
    lr: float = 3e-3
    kl_weight: float = 1e-4
    init_logvar: float = -6.0  # initial posterior log-variance (quant_conv bias of the logvar rows)
    foreground_weight: float = 10.0  # reconstruction weight of shape pixels vs background
    seed: int = 0


def synthetic_frames(recipe: VAERecipe, workdir: Path) -> Tensor:
    """Frames of both synthetic domains → (N, 3, size, size) float32 in [-1, 1]."""
    from data_tools.synth import make_synthetic_dataset
    from tsm_video.data.video_io import decode_frames

    frames = []
    for i, domain in enumerate(("a", "b")):
        csv = make_synthetic_dataset(
            workdir / domain,
            num_videos=recipe.videos_per_domain,
            seed=recipe.seed + i,
            size=(recipe.size, recipe.size),
            num_frames=recipe.num_frames,
            domain=domain,
        )
        for video in sorted((csv.parent / "videos").glob("*.mp4")):
            clip, _ = decode_frames(video, list(range(recipe.num_frames)))  # (T, H, W, 3) uint8
            frames.append(clip)
    pixels = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def _foreground_weight(images: Tensor, weight: float) -> Tensor:
    """(N, 3, H, W) → (N, 1, H, W): ``weight`` on pixels that differ from their image's median
    colour by more than 0.3 (the shapes), 1 elsewhere. Shapes cover a few percent of a frame, so
    an unweighted MSE is nearly all background and learns their colour last."""
    median = images.flatten(2).median(dim=2).values[..., None, None]  # (N, 3, 1, 1)
    foreground = (images - median).abs().sum(1, keepdim=True) > 0.3
    return 1.0 + (weight - 1.0) * foreground.float()


def _kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent elements, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()


def train_tiny_vae(
    frames: Tensor, recipe: VAERecipe, print_fn=print
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Train ``vc2-tiny``'s VAE on ``frames`` (N, 3, H, W) in [-1, 1]; rescale its latents.

    Returns ``(state, stats)``: the VAE's weights under official keys and the final
    reconstruction MSE, KL and latent standard deviation (after rescaling, ≈ 1).
    """
    from tsm_video.models import build_backbone

    torch.manual_seed(recipe.seed)
    vae = build_backbone("vc2-tiny").vae.train()
    with torch.no_grad():  # start with a small posterior variance: a near-deterministic code learns fast
        vae.quant_conv.bias[vae.quant_conv.out_channels // 2 :] = recipe.init_logvar
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    g = torch.Generator().manual_seed(recipe.seed)
    rec = kl = float("nan")
    for step in range(recipe.steps):
        batch = frames[torch.randint(len(frames), (recipe.batch_size,), generator=g)]
        y, x = torch.randint(frames.shape[-1] - recipe.crop + 1, (2,), generator=g).tolist()
        batch = batch[..., y : y + recipe.crop, x : x + recipe.crop]
        mean, logvar = vae.posterior(vae.moments(batch))
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        recon = vae.decode_images(z)
        weight = _foreground_weight(batch, recipe.foreground_weight)
        rec_loss = ((recon - batch).pow(2) * weight).sum() / (weight.sum() * batch.shape[1])
        kl_loss = _kl(mean, logvar) / batch[0].numel()  # per pixel value, like the MSE
        loss = rec_loss + recipe.kl_weight * kl_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        rec, kl = rec_loss.item(), kl_loss.item()
        if step % 100 == 0 or step == recipe.steps - 1:
            print_fn(f"[vae] step {step}/{recipe.steps}: recon MSE {rec:.5f}, KL {kl:.4f}")
    vae.eval()
    std = _rescale_latents(vae, frames[:: max(1, len(frames) // 512)])
    return {_PREFIX + k: v for k, v in vae.state_dict().items()}, {
        "recon_mse": rec,
        "kl": kl,
        "latent_std": std,
    }


@torch.no_grad()
def _rescale_latents(vae, frames: Tensor) -> float:
    """Make ``scale_factor · mean`` unit-std: fold a factor ``k`` into ``quant_conv``'s mean rows
    (``+2 log k`` into the log-variance bias) and ``1/k`` into ``post_quant_conv``; exact."""
    mean = torch.cat([vae.posterior(vae.moments(c))[0] for c in frames.split(64)])
    k = 1.0 / (vae.scale_factor * mean.std().item())
    c = vae.quant_conv.out_channels // 2
    vae.quant_conv.weight[:c] *= k
    vae.quant_conv.bias[:c] *= k
    vae.quant_conv.bias[c:] += 2 * math.log(k)
    vae.post_quant_conv.weight /= k
    mean = torch.cat([vae.posterior(vae.moments(c))[0] for c in frames.split(64)])
    return float((mean * vae.scale_factor).std())


def compose_checkpoint(
    path: str | Path,
    seed: int = 0,
    vae_weights: str | Path = VAE_WEIGHTS,
    base_weights: str | Path | None = None,
) -> Path:
    """Write a full ``vc2-tiny`` checkpoint (official keys): UNet and text encoder from
    ``base_weights`` (the pretrained demo base, :mod:`tsm_video.demo.base`; stored fp16 tensors
    are widened to fp32) or, when None, seeded-random (``torch.manual_seed(seed)``, as the
    trainer's random init); VAE from ``vae_weights``."""
    from tsm_video.demo.base import BASE_PREFIXES  # (base.py uses this module: import here)
    from tsm_video.models import build_backbone

    torch.manual_seed(seed)
    model = build_backbone("vc2-tiny")
    state = model.checkpoint_state_dict()
    parts = [(vae_weights, (_PREFIX,), "VAE")]
    if base_weights is not None:
        parts.append((base_weights, BASE_PREFIXES, "base"))
    for file, prefixes, what in parts:
        tensors = read_state_dict(file)
        missing = sorted(k for k in state if k.startswith(prefixes) and k not in tensors)
        if missing:
            raise ValueError(f"{file}: not vc2-tiny {what} weights (missing {missing[:3]} ...)")
        state.update({k: v.float() for k, v in tensors.items() if k.startswith(prefixes)})
    save_safetensors(state, path)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped VAE weights (``python -m tsm_video.demo.vae [--out PATH]``)."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(VAE_WEIGHTS), help=f"output file (default: {VAE_WEIGHTS})")
    parser.add_argument("--steps", type=int, default=VAERecipe.steps, help="optimizer steps")
    args = parser.parse_args(argv)
    recipe = VAERecipe(steps=args.steps)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        frames = synthetic_frames(recipe, Path(tmp))
    state, stats = train_tiny_vae(frames, recipe)
    save_recipe_weights(state, args.out, recipe, stats, "python -m tsm_video.demo.vae")
    print(f"[vae] {len(frames)} frames, {time.perf_counter() - start:.0f} s, {stats} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
