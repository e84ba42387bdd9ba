"""Spatial and temporal transformers of the VC2 UNet (official ``Spatial``/``TemporalTransformer``).

Folding keeps the batch outermost (the invariant TSM layers rely on: a wrapped projection sees a leading
dim ``N`` that is a multiple of the batch and expands per-sample timesteps by ``N // B``):

* spatial attention runs on ``(b f) (h w) c`` tokens;
* temporal attention runs on ``(b h w) f c`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsm_video.models.vc2.attention import CrossAttention
from tsm_video.models.vc2.blocks import fold_frames, maybe_checkpoint, zero_init

__all__ = ["BasicTransformerBlock", "FeedForward", "SpatialTransformer", "TemporalTransformer"]


class GEGLU(nn.Module):
    """``x, gate = proj(x).chunk(2)``; ``x * gelu(gate)`` (exact erf GELU)."""

    def __init__(self, dim_in: int, dim_out: int, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, width ×4; children ``net.0.proj`` and ``net.2`` as in the checkpoint.

    ``net.1`` is the official (always zero-rate) dropout, kept as an identity to hold the index.
    """

    def __init__(self, dim: int, mult: int = 4, device=None, dtype=None) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(
            GEGLU(dim, inner, device=device, dtype=dtype),
            nn.Identity(),
            nn.Linear(inner, dim, device=device, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm ``attn1`` (self) → ``attn2`` (cross, or a second self-attention without context) → ``ff``.

    Shapes: x ``(N, L, dim)``; context ``(N, Lc, context_dim)`` or ``None`` → ``(N, L, dim)``.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        d_head: int,
        context_dim: int | None = None,
        *,
        relative_position_length: int | None = None,
        image_cross_attention: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        rel = {"relative_position_length": relative_position_length}
        self.gradient_checkpointing = False
        self.attn1 = CrossAttention(dim, None, n_heads, d_head, **rel, **dd)
        self.ff = FeedForward(dim, **dd)
        self.attn2 = CrossAttention(
            dim, context_dim, n_heads, d_head, **rel, image_cross_attention=image_cross_attention, **dd
        )
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.norm3 = nn.LayerNorm(dim, **dd)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        return maybe_checkpoint(self.gradient_checkpointing, self._forward, x, context, causal)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = self.attn1(self.norm1(x), causal=causal) + x
        x = self.attn2(self.norm2(x), context, causal=causal) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Attention over the ``h w`` positions of each frame, cross-attending to the text context.

    GroupNorm (eps 1e-6, activation dtype) → ``proj_in`` (Linear with ``use_linear``, else 1×1 conv) →
    blocks → zero-init ``proj_out`` → residual.

    Shapes: x ``(b f) c h w``; context ``(b f) L D`` → ``(b f) c h w``.
    """

    def __init__(
        self,
        in_channels: int,
        n_heads: int,
        d_head: int,
        depth: int,
        context_dim: int,
        *,
        use_linear: bool,
        image_cross_attention: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, **dd)
        if use_linear:
            self.proj_in = nn.Linear(in_channels, inner, **dd)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner, 1, **dd)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, n_heads, d_head, context_dim, image_cross_attention=image_cross_attention, **dd
            )
            for _ in range(depth)
        )
        if use_linear:
            self.proj_out = zero_init(nn.Linear(inner, in_channels, **dd))
        else:
            self.proj_out = zero_init(nn.Conv2d(inner, in_channels, 1, **dd))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # 1. norm and project in, tokens (b f) (h w) c
        tokens = self.norm(x)
        if not self.use_linear:
            tokens = self.proj_in(tokens)
        tokens = tokens.flatten(2).transpose(1, 2)  # (b f) (h w) c
        if self.use_linear:
            tokens = self.proj_in(tokens)
        # 2. transformer blocks
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        # 3. project out, back to (b f) c h w, residual
        if self.use_linear:
            tokens = self.proj_out(tokens)
        out = tokens.transpose(1, 2).reshape(n, -1, h, w)  # (b f) c h w
        if not self.use_linear:
            out = self.proj_out(out)
        return out + x


class TemporalTransformer(nn.Module):
    """Attention over the frames of each spatial position.

    GroupNorm (eps 1e-6) over the whole clip ``b c f h w`` → ``proj_in`` (Linear with ``use_linear``,
    else Conv1d k=1, as ``init_attn``) → blocks → zero-init ``proj_out`` → residual.

    With ``only_self_att`` (VC2), ``attn2`` is a second self-attention: context is ignored and
    ``to_k``/``to_v`` map ``inner → inner``; ``causal`` masks future frames in both attentions.
    Otherwise ``attn2`` cross-attends every position to its sample's context and, as in the
    official code, the causal mask is not applied. (The official code builds the causal mask at
    ``temporal_length`` frames and tiles the context over ``h*w // f`` positions, so it only runs when
    ``f == temporal_length`` and ``f`` divides ``h*w``; where it runs, this computes the same values,
    and it also runs for any other ``f``.)

    Shapes: x ``(b f) c h w``; context ``(b, L, D)`` per sample (not repeated over frames) or ``None``
    → ``(b f) c h w``. Tokens are ``(b h w) f c`` (batch outermost).
    """

    def __init__(
        self,
        in_channels: int,
        n_heads: int,
        d_head: int,
        depth: int,
        context_dim: int | None,
        *,
        use_linear: bool,
        only_self_att: bool,
        causal: bool,
        relative_position_length: int | None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.only_self_att = only_self_att
        self.causal = causal and only_self_att
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, **dd)
        if use_linear:
            self.proj_in = nn.Linear(in_channels, inner, **dd)
        else:
            self.proj_in = nn.Conv1d(in_channels, inner, 1, **dd)
        block_context_dim = None if only_self_att else context_dim
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                n_heads,
                d_head,
                block_context_dim,
                relative_position_length=relative_position_length,
                **dd,
            )
            for _ in range(depth)
        )
        if use_linear:
            self.proj_out = zero_init(nn.Linear(inner, in_channels, **dd))
        else:
            self.proj_out = zero_init(nn.Conv1d(inner, in_channels, 1, **dd))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        n, c, h, w = x.shape
        b, f = n // num_frames, num_frames
        # 1. norm over the clip, tokens (b h w) f c
        normed = self.norm(fold_frames(x, f))  # b c f h w
        tokens = normed.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, f)  # (b h w) c f
        if not self.use_linear:
            tokens = self.proj_in(tokens)
        tokens = tokens.transpose(1, 2)  # (b h w) f c
        if self.use_linear:
            tokens = self.proj_in(tokens)
        # 2. transformer blocks (cross-attention context repeated per position, batch outermost)
        block_context = None
        if not self.only_self_att:
            block_context = context.repeat_interleave(h * w, dim=0)  # (b h w) L D
        for block in self.transformer_blocks:
            tokens = block(tokens, block_context, causal=self.causal)
        # 3. project out, back to (b f) c h w, residual
        if self.use_linear:
            tokens = self.proj_out(tokens)
        else:
            tokens = self.proj_out(tokens.transpose(1, 2)).transpose(1, 2)  # (b h w) f c
        out = tokens.reshape(b, h, w, f, c).permute(0, 3, 4, 1, 2).reshape(n, c, h, w)  # (b f) c h w
        return out + x
