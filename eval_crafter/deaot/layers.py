"""Building blocks of DeAOT's gated propagation: shapes are ``(tokens, batch, channels)``
("sequence") or ``(batch, channels, h, w)`` ("2-D"); ``size_2d`` is the ``(h, w)`` token grid.

Module and parameter names follow the official checkpoint (``linear_QV``, ``dw_conv.conv``,
``relative_emb_k``, ...), so a state dict loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FrozenBatchNorm2d",
    "SequenceGroupNorm",
    "ConvGN",
    "DepthwiseConv",
    "GlobalGatedPropagation",
    "LocalGatedPropagation",
    "GatedPropagationLayer",
    "DualBranchPropagation",
    "seq_to_2d",
]


def seq_to_2d(x: torch.Tensor, size_2d: tuple[int, int]) -> torch.Tensor:
    """(h*w, B, C) -> (B, C, h, w)."""
    h, w = size_2d
    return x.view(h, w, x.shape[1], x.shape[2]).permute(2, 3, 0, 1).contiguous()


def _seq_from_2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (h*w, B, C)."""
    b, c = x.shape[:2]
    return x.reshape(b, c, -1).permute(2, 0, 1)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (``F.batch_norm`` in eval mode, eps 1e-5)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


class SequenceGroupNorm(nn.Module):
    """GroupNorm over the channels of a (L, B, C) sequence (official ``GroupNorm1D``)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gn(x.permute(1, 2, 0)).permute(2, 0, 1)


class ConvGN(nn.Module):
    """Conv (same padding) then GroupNorm(8)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.gn = nn.GroupNorm(8, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gn(self.conv(x))


class DepthwiseConv(nn.Module):
    """5x5 depthwise conv, no bias, applied to a sequence on its token grid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 5, padding=2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor, size_2d: tuple[int, int]) -> torch.Tensor:
        return _seq_from_2d(self.conv(seq_to_2d(x, size_2d)))


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # the official silu (not F.silu: same value, other kernel)


class GlobalGatedPropagation(nn.Module):
    """Single-head gated attention over all memory tokens (official ``GatedPropagation``).

    ``out = projection(dw_conv(softmax(Q K^T / sqrt(d_att)) V * U))``. With ``project_inputs``
    (the self-propagation), Q = K come from ``linear_QK`` and V, U from two half-width linears
    each followed by SiLU; otherwise the caller passes them projected.

    Args:
        d_qk: query/key input width; d_vu: value/gate input width; d_att: attention width.
    """

    def __init__(self, d_qk: int, d_vu: int, d_att: int, project_inputs: bool) -> None:
        super().__init__()
        self.d_att, self.d_vu, self.hidden = d_att, d_vu, 2 * d_vu
        self.project_inputs = project_inputs
        if project_inputs:
            self.linear_QK = nn.Linear(d_qk, d_att)
            half_in, half_out = d_vu // 2, self.hidden // 2
            self.linear_V1 = nn.Linear(half_in, half_out)
            self.linear_V2 = nn.Linear(half_in, half_out)
            self.linear_U1 = nn.Linear(half_in, half_out)
            self.linear_U2 = nn.Linear(half_in, half_out)
        self.dw_conv = DepthwiseConv(self.hidden)
        self.projection = nn.Linear(self.hidden, d_vu)

    def _halves(self, x: torch.Tensor, first: nn.Linear, second: nn.Linear) -> torch.Tensor:
        a, b = x.split(self.d_vu // 2, dim=-1)
        return _silu(torch.cat([first(a), second(b)], dim=-1))

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, u: torch.Tensor, size_2d: tuple[int, int]
    ) -> torch.Tensor:
        """q (L, B, *), k (M, B, *), v (M, B, *), u (L, B, *) -> (L, B, d_vu)."""
        if self.project_inputs:
            q = k = self.linear_QK(q)
            v = self._halves(v, self.linear_V1, self.linear_V2)
            u = self._halves(u, self.linear_U1, self.linear_U2)
        length, batch = q.shape[:2]
        q = (q / self.d_att**0.5).permute(1, 0, 2)  # b l d
        k = k.permute(1, 2, 0)  # b d m
        attn = torch.softmax(q @ k, dim=-1)  # b l m
        out = (attn @ v.permute(1, 0, 2)).permute(1, 0, 2) * u  # l b hidden
        return self.projection(self.dw_conv(out, size_2d))


class LocalGatedPropagation(nn.Module):
    """Single-head gated attention inside a 15x15 window around each token, with a learned
    relative-position term (official ``LocalGatedPropagation``, ``max_dis=7``).

    Window positions outside the grid get ``-1e8`` (float32; ``-1e4`` in lower precision)
    before the softmax, so their weight is exactly zero; the weights are then placed into a
    dense (h*w, h*w) matrix and multiplied with the values, as the official ``local2global``.
    """

    def __init__(self, d_att: int, d_vu: int, max_dis: int = 7) -> None:
        super().__init__()
        self.d_att, self.max_dis = d_att, max_dis
        self.window = 2 * max_dis + 1
        self.hidden = 2 * d_vu
        self.relative_emb_k = nn.Conv2d(d_att, self.window * self.window, kernel_size=1)
        self.dw_conv = DepthwiseConv(self.hidden)
        self.projection = nn.Linear(self.hidden, d_vu)
        self._index_cache: dict = {}

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, window^2, h*w), zero outside the grid."""
        b, c = x.shape[:2]
        cols = F.unfold(F.pad(x, (self.max_dis,) * 4), kernel_size=self.window)
        return cols.view(b, c, self.window * self.window, -1)

    def _indices(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """For every in-grid (window slot, query) pair: slot, query and key flat indices; and
        the (window^2, h*w) out-of-grid mask."""
        key = (h, w, str(device))
        if key not in self._index_cache:
            r = self.max_dis
            dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
            qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            ky = qy.reshape(1, -1) + dy.reshape(-1, 1)  # slot query
            kx = qx.reshape(1, -1) + dx.reshape(-1, 1)
            inside = (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
            slot, query = inside.nonzero(as_tuple=True)
            keys = (ky * w + kx)[slot, query]
            self._index_cache[key] = tuple(t.to(device) for t in (slot, query, keys, ~inside))
        return self._index_cache[key]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, u: torch.Tensor, size_2d: tuple[int, int]
    ) -> torch.Tensor:
        """q, k (B, d_att, h, w), v (B, hidden, h, w), u (h*w, B, hidden) -> (h*w, B, d_vu)."""
        b, _, h, w = v.shape
        slot, query, keys, outside = self._indices(h, w, v.device)
        relative = self.relative_emb_k(q).view(b, self.window * self.window, h * w)
        q = q / self.d_att**0.5
        qk = (q.reshape(b, self.d_att, 1, h * w) * self._unfold(k)).sum(dim=1) + relative  # b slot hw
        qk = qk - outside.to(qk.dtype) * (1e8 if qk.dtype == torch.float32 else 1e4)
        local_attn = torch.softmax(qk, dim=1)
        dense = torch.zeros((b, h * w, h * w), dtype=local_attn.dtype, device=v.device)
        dense[:, query, keys] = local_attn[:, slot, query]
        out = (dense @ v.reshape(b, self.hidden, h * w).transpose(1, 2)).permute(1, 0, 2) * u  # hw b hidden
        return self.projection(self.dw_conv(out, size_2d))


class GatedPropagationLayer(nn.Module):
    """One DeAOT propagation layer: long/short-term gated propagation of the visual branch
    and the identity branch against the memories, then gated self-propagation of both.

    Memories per layer are ``[K, V, None, ID_V]``: sequence form for the long-term memory,
    2-D form for the short-term one; the third slot (an identity key) is unused by DeAOT.
    """

    def __init__(self, d_model: int = 256, layer_idx: int = 0) -> None:
        super().__init__()
        self.d_model, self.d_att, self.layer_idx = d_model, d_model // 2, layer_idx
        expand = 2 * d_model
        self.norm1 = nn.LayerNorm(d_model)
        self.linear_QV = nn.Linear(d_model, self.d_att + expand)
        self.linear_U = nn.Linear(d_model, expand)
        if layer_idx == 0:
            self.linear_ID_V = nn.Linear(d_model, expand)
        else:
            self.id_norm1 = nn.LayerNorm(d_model)
            self.linear_ID_V = nn.Linear(2 * d_model, expand)
            self.linear_ID_U = nn.Linear(d_model, expand)
        self.long_term_attn = GlobalGatedPropagation(d_model, 2 * d_model, self.d_att, project_inputs=False)
        self.short_term_attn = LocalGatedPropagation(self.d_att, 2 * d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.id_norm2 = nn.LayerNorm(d_model)
        self.self_attn = GlobalGatedPropagation(2 * d_model, 2 * d_model, self.d_att, project_inputs=True)

    def identity_values(self, id_features: torch.Tensor | None, id_emb: torch.Tensor) -> torch.Tensor:
        """The identity values stored in memory: SiLU(linear_ID_V([id branch features, id embedding]))."""
        x = id_emb if id_features is None else torch.cat([id_features, id_emb], dim=2)
        return _silu(self.linear_ID_V(x))

    def forward(
        self,
        x: torch.Tensor,
        x_id: torch.Tensor | None,
        long_term: list | None,
        short_term: list | None,
        id_emb: torch.Tensor | None,
        size_2d: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """x (L, B, C) visual branch, x_id identity branch (None before the first layer).

        With ``id_emb`` (a reference frame) the memories are this frame's own; otherwise
        they are ``long_term`` and ``short_term``. Returns the two branches and
        ``[current, long-term-form, short-term-form]`` memories of this frame.
        """
        normed = self.norm1(x)
        q, v = self.linear_QV(normed).split([self.d_att, 2 * self.d_model], dim=2)
        v = _silu(v)
        u = self.linear_U(normed)
        if x_id is None:
            gate = torch.cat([_silu(u), torch.ones_like(u)], dim=-1)
            id_features = None
        else:
            id_features = self.id_norm1(x_id)
            gate = _silu(torch.cat([u, self.linear_ID_U(id_features)], dim=-1))
        if id_emb is not None:
            global_k, global_v = q, v
            global_id_v = self.identity_values(id_features, id_emb)
            local_k, local_v, local_id_v = (seq_to_2d(t, size_2d) for t in (q, v, global_id_v))
        else:
            global_k, global_v, _, global_id_v = long_term
            local_k, local_v, _, local_id_v = short_term
        long_values = torch.cat([global_v, global_id_v], dim=-1)
        short_values = torch.cat([local_v, local_id_v], dim=1)
        long_out = self.long_term_attn(q, global_k, long_values, gate, size_2d)
        short_out = self.short_term_attn(seq_to_2d(q, size_2d), local_k, short_values, gate, size_2d)
        d = self.d_model
        x = x + (long_out[..., :d] + short_out[..., :d])
        x_id = (0 if x_id is None else x_id) + (long_out[..., d:] + short_out[..., d:])
        both = torch.cat([self.norm2(x), self.id_norm2(x_id)], dim=-1)
        out = self.self_attn(both, both, both, both, size_2d)
        x, x_id = x + out[..., :d], x_id + out[..., d:]
        memories = [
            [q, v, None, id_features],
            [global_k, global_v, None, global_id_v],
            [local_k, local_v, None, local_id_v],
        ]
        return x, x_id, memories


class DualBranchPropagation(nn.Module):
    """The stack of propagation layers (official ``DualBranchGPM``); the last output, both
    branches concatenated, goes through ``decoder_norms.0`` (GroupNorm, 2 groups)."""

    def __init__(self, num_layers: int = 3, d_model: int = 256) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GatedPropagationLayer(d_model, i) for i in range(num_layers))
        self.decoder_norms = nn.ModuleList([SequenceGroupNorm(2 * d_model, 2)])

    def forward(
        self,
        x: torch.Tensor,
        long_term: list | None,
        short_term: list | None,
        id_emb: torch.Tensor | None,
        size_2d: tuple[int, int],
    ) -> tuple[torch.Tensor, list]:
        """x (L, B, C) -> ((L, B, 2C) normalised output, per-layer memories)."""
        x_id, memories = None, []
        for idx, layer in enumerate(self.layers):
            long_mem = long_term[idx] if long_term is not None else None
            short_mem = short_term[idx] if short_term is not None else None
            x, x_id, layer_memories = layer(x, x_id, long_mem, short_mem, id_emb, size_2d)
            memories.append(layer_memories)
        return self.decoder_norms[0](torch.cat([x, x_id], dim=2)), memories
