"""Convolutional blocks of the VC2 UNet: ResBlock (+ ``temopral_conv``), Downsample, Upsample.

Every block works on frames folded into the batch, batch outermost: ``(b f) c h w``. Blocks that mix
frames unfold to ``b c f h w`` with the ``num_frames`` they are given and fold back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tsm_video.models.vc2.norm import GroupNorm32

__all__ = ["Downsample", "ResBlock", "TemporalConvBlock", "Upsample", "maybe_checkpoint", "zero_init"]


def maybe_checkpoint(enabled: bool, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    """Run ``fn(*args)``, with activation checkpointing (non-reentrant) when enabled and grads are on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place (the official ``zero_module``) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def fold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(b f) c h w`` → ``b c f h w``."""
    bf, c, h, w = x.shape
    return x.view(bf // num_frames, num_frames, c, h, w).transpose(1, 2)  # b c f h w


def unfold_frames(x: torch.Tensor) -> torch.Tensor:
    """``b c f h w`` → ``(b f) c h w``."""
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)  # (b f) c h w


class TemporalConvBlock(nn.Module):
    """Four ``GroupNorm → SiLU → (Dropout) → Conv3d`` stages over frames plus the identity.

    Checkpoint names ``conv1.{0,2}``, ``conv2..4.{0,3}``. Kernels ``(3,1,1)``; the first two are
    ``(3,3,3)`` when ``spatial_aware``. The last conv is zero-initialised (block starts as identity).
    Dropout is fixed at 0.1, as the official UNet builds it regardless of its ``dropout``.

    Shapes: ``(b, c, f, h, w)`` in and out.
    """

    DROPOUT = 0.1

    def __init__(self, channels: int, spatial_aware: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        wide = ((3, 3, 3), (1, 1, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        thin = ((3, 1, 1), (1, 0, 0))

        def stage(kernel_padding, dropout: bool) -> nn.Sequential:
            kernel, padding = kernel_padding
            conv = nn.Conv3d(channels, channels, kernel, padding=padding, **dd)
            middle = [nn.Dropout(self.DROPOUT)] if dropout else []
            return nn.Sequential(nn.GroupNorm(32, channels, **dd), nn.SiLU(), *middle, conv)

        self.conv1 = stage(wide, dropout=False)
        self.conv2 = stage(wide, dropout=True)
        self.conv3 = stage(thin, dropout=True)
        self.conv4 = stage(thin, dropout=True)
        zero_init(self.conv4[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


class Downsample(nn.Module):
    """Halve ``h, w``: stride-2 3×3 conv ``op`` (``conv_resample``) or 2×2 average pooling."""

    def __init__(
        self, channels: int, use_conv: bool, out_channels: int | None = None, device=None, dtype=None
    ):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, device=device, dtype=dtype)
        elif out_channels != channels:
            raise ValueError(f"Downsample without conv keeps channels, got {channels} → {out_channels}")
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double ``h, w`` (nearest) and, with ``use_conv``, apply a 3×3 conv ``conv``."""

    def __init__(
        self, channels: int, use_conv: bool, out_channels: int | None = None, device=None, dtype=None
    ):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1, device=device, dtype=dtype)
        elif out_channels != channels:
            raise ValueError(f"Upsample without conv keeps channels, got {channels} → {out_channels}")
        else:
            self.conv = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on the (timestep + fps) embedding, with an optional temporal conv.

    ``in_layers`` (GroupNorm32, SiLU, conv) → add ``emb_layers(emb)`` (or FiLM scale/shift with
    ``use_scale_shift_norm``) → ``out_layers`` (GroupNorm32, SiLU, Dropout, zero-init conv) → add the
    skip → ``temopral_conv`` (key spelled as in the checkpoint) over frames. With ``up``/``down`` the
    block resamples (``resblock_updown``) and has no temporal conv, as in the official code.

    Shapes: x ``(b f) c h w``, emb ``(b f) E`` → ``(b f) out_channels h' w'``.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        *,
        use_scale_shift_norm: bool = False,
        use_temporal_conv: bool = False,
        tempspatial_aware: bool = False,
        up: bool = False,
        down: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.gradient_checkpointing = False
        self.in_layers = nn.Sequential(
            GroupNorm32(32, channels, **dd), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1, **dd)
        )
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out, **dd))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, out_channels, **dd),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1, **dd)),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1, **dd)
        self.use_temporal_conv = use_temporal_conv
        if use_temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels, spatial_aware=tempspatial_aware, **dd)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        return maybe_checkpoint(self.gradient_checkpointing, self._forward, x, emb, num_frames)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        # 1. norm, act, (resample), conv
        in_norm, in_act, in_conv = self.in_layers
        h = in_conv(self.h_upd(in_act(in_norm(x))))
        x = self.x_upd(x)
        # 2. add the embedding (or FiLM it in), then the output stage
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]  # (b f) c 1 1
        if self.use_scale_shift_norm:
            out_norm, *out_rest = self.out_layers
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            for layer in out_rest:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        # 3. skip, then mix frames
        h = self.skip_connection(x) + h
        if self.use_temporal_conv:
            h = unfold_frames(self.temopral_conv(fold_frames(h, num_frames)))  # (b f) c h w
        return h
