"""VideoCrafter2's VAE: Stable Diffusion's KL-f8 image autoencoder, applied frame by frame.

The module tree mirrors LVDM's ``AutoencoderKL`` (``encoder.down.0.block.0.norm1`` …,
``quant_conv``, ``post_quant_conv``), so a checkpoint's ``first_stage_model.*`` keys load strictly
with no key conversion. Videos are folded to ``(b t) c h w`` (batch outermost) and run through the
2D autoencoder in chunks of ``chunk_size`` frames; latents are scaled by ``scale_factor`` (0.18215).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VC2VAE", "Encoder", "Decoder"]


def _norm(channels: int, device=None, dtype=None) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True, device=device, dtype=dtype)


class ResnetBlock(nn.Module):
    """norm → SiLU → conv3 → norm → SiLU → dropout → conv3, plus a 1×1 ``nin_shortcut`` if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = _norm(in_channels, **dd)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, **dd)
        self.norm2 = _norm(out_channels, **dd)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, **dd)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, **dd) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 conv projections (``q``, ``k``, ``v``, ``proj_out``)."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm = _norm(channels, **dd)
        self.q = nn.Conv2d(channels, channels, 1, **dd)
        self.k = nn.Conv2d(channels, channels, 1, **dd)
        self.v = nn.Conv2d(channels, channels, 1, **dd)
        self.proj_out = nn.Conv2d(channels, channels, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (
            proj(y).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v)
        )  # b 1 hw c
        out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c); scale c**-0.5
        out = out.transpose(2, 3).reshape(b, c, h, w)  # b c h w
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3×3 conv after padding right and bottom by one (LDM's asymmetric padding)."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attns: list[nn.Module]) -> nn.Module:
    """One resolution level holding ``block`` and ``attn`` lists (LDM key layout)."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    return level


def _mid(channels: int, dropout: float, dd: dict) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout, **dd)
    mid.attn_1 = AttnBlock(channels, **dd)  # always present, even with attn_resolutions=[]
    mid.block_2 = ResnetBlock(channels, channels, dropout, **dd)
    return mid


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    """Pixels (N, in_channels, H, W) → (N, 2·z_channels, H/2^(L-1), W/2^(L-1)) (mean ‖ logvar)."""

    def __init__(
        self,
        ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        attn_resolutions: list[int],
        dropout: float,
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, **dd)
        self.down = nn.ModuleList()
        res, block_in = resolution, ch
        for i, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, dropout, **dd))
                block_in = ch * mult
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in, **dd))
            level = _level(blocks, attns)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in, **dd)
                res //= 2
            self.down.append(level)
        self.mid = _mid(block_in, dropout, dd)
        self.norm_out = _norm(block_in, **dd)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (N, z_channels, h, w) → pixels (N, out_ch, h·2^(L-1), w·2^(L-1)); no tanh."""

    def __init__(
        self,
        ch: int,
        out_ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        attn_resolutions: list[int],
        dropout: float,
        resolution: int,
        z_channels: int,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1, **dd)
        self.mid = _mid(block_in, dropout, dd)
        levels = []
        for i in reversed(range(len(ch_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[i], dropout, **dd))
                block_in = ch * ch_mult[i]
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in, **dd))
            level = _level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in, **dd)
                res *= 2
            levels.insert(0, level)  # up.0 is the finest level, as in the checkpoint
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, **dd)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1, **dd)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VC2VAE(nn.Module):
    """LVDM ``AutoencoderKL`` plus VC2's video wrapper (frame folding, chunking, ``scale_factor``).

    Args: the flattened ``first_stage_config.params`` (VC2's: ``configs.VC2_ARCH["vae"]``), ``scale_factor``
    and ``chunk_size`` (frames per encoder/decoder call; memory vs speed, same result).
    """

    def __init__(
        self,
        embed_dim: int = 4,
        double_z: bool = True,
        z_channels: int = 4,
        resolution: int = 256,
        in_channels: int = 3,
        out_ch: int = 3,
        ch: int = 128,
        ch_mult: list[int] | tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: list[int] | tuple[int, ...] = (),
        dropout: float = 0.0,
        scale_factor: float = 0.18215,
        chunk_size: int = 4,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not double_z:
            raise ValueError("VC2VAE is a KL autoencoder: double_z must be True (mean and logvar)")
        if ch % 32 or chunk_size < 1 or not ch_mult:
            raise ValueError(
                f"need ch divisible by 32 (GroupNorm(32)), chunk_size >= 1 and a non-empty ch_mult; "
                f"got ch={ch}, chunk_size={chunk_size}, ch_mult={list(ch_mult)}"
            )
        dd = {"device": device, "dtype": dtype}
        shared = {
            "ch": ch,
            "ch_mult": list(ch_mult),
            "num_res_blocks": num_res_blocks,
            "attn_resolutions": list(attn_resolutions),
            "dropout": dropout,
            "resolution": resolution,
            "z_channels": z_channels,
        }
        self.config: dict[str, Any] = {
            "embed_dim": embed_dim,
            "double_z": double_z,
            "in_channels": in_channels,
            "out_ch": out_ch,
            **shared,
            "scale_factor": scale_factor,
            "chunk_size": chunk_size,
        }
        self.scale_factor = float(scale_factor)
        self.chunk_size = int(chunk_size)
        self.downscale = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(in_channels=in_channels, double_z=double_z, **shared, **dd)
        self.decoder = Decoder(out_ch=out_ch, **shared, **dd)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, 1, **dd)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1, **dd)

    @classmethod
    def from_config(cls, config: dict[str, Any], device=None, dtype=None) -> VC2VAE:
        """Build from a flattened config dict (unknown keys raise)."""
        return cls(**config, device=device, dtype=dtype)

    # --- image-level autoencoder (LVDM AutoencoderKL semantics) ---
    def moments(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] → moments (N, 2·embed_dim, H/f, W/f) (mean ‖ raw logvar)."""
        return self.quant_conv(self.encoder(images))

    @staticmethod
    def posterior(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split moments into ``(mean, logvar)``, logvar clamped to [-30, 20] as LDM does."""
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (N, embed_dim, h, w) → images (N, 3, h·f, w·f) (no clamp)."""
        return self.decoder(self.post_quant_conv(z))

    # --- video-level API with scale_factor ---
    def encode(
        self,
        pixels: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Video (B, 3, T, H, W) in [-1, 1] → scaled latents (B, embed_dim, T, H/f, W/f).

        ``sample=True`` draws ``mean + std·ε`` (what VC2 trains on; ε from ``generator``),
        ``False`` returns the posterior mean. Both are multiplied by ``scale_factor``.
        """
        if pixels.dim() != 5:
            raise ValueError(f"pixels must be (B, 3, T, H, W), got shape {tuple(pixels.shape)}")
        b, c, t, h, w = pixels.shape
        if h % self.downscale or w % self.downscale:
            raise ValueError(f"frame size {h}x{w} is not divisible by the VAE downscale {self.downscale}")
        frames = pixels.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b t) c h w
        latents = []
        for chunk in frames.split(chunk_size or self.chunk_size):
            mean, logvar = self.posterior(self.moments(chunk))
            if sample:
                eps = torch.randn(
                    mean.shape,
                    generator=generator,
                    dtype=mean.dtype,
                    device=generator.device if generator is not None else mean.device,
                ).to(mean.device)
                mean = mean + torch.exp(0.5 * logvar) * eps
            latents.append(mean)
        z = torch.cat(latents) * self.scale_factor  # (b t) c h w
        return z.reshape(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4)  # b c t h w

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Scaled latents (B, embed_dim, T, h, w) → video (B, 3, T, h·f, w·f), roughly in [-1, 1]."""
        if z.dim() != 5:
            raise ValueError(f"latents must be (B, C, T, h, w), got shape {tuple(z.shape)}")
        b, c, t, h, w = z.shape
        frames = (1.0 / self.scale_factor * z).permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b t) c h w
        video = torch.cat(
            [self.decode_images(chunk) for chunk in frames.split(chunk_size or self.chunk_size)]
        )
        return video.reshape(b, t, *video.shape[1:]).permute(0, 2, 1, 3, 4)  # b c t H W
