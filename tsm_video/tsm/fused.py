"""Merged stage-2 inference of ``TSMLinear`` layers, one matmul for the layers that read one input.

Stage 2 (paper Sec. 3.2) adds to the merged core ``(W0 + ΔW)·x`` the interval's context experts,
gated per token by ``g = act(FC(x) + Emb(t))``; the gate depends on ``x``, so they cannot be
merged. :class:`SharedInputGroup` evaluates ``G`` such layers that read the same input (``to_k``
and ``to_v`` of one attention; ``G = 1`` for a layer alone) with:

- one ``addmm``: ``p = x·Wᵀ + bias(t)``, ``W`` stacking per layer the block ``[W0 + ΔW; FC_r;
  A_ctx]`` ((out + 2·k·r), in) and ``bias(t)`` the row of a (T, G·(out + 2·k·r)) table holding
  per layer ``[b; Emb_r(t); 0]`` (the base's bias and the router's ``Emb``): ``p`` holds every
  layer's merged output, gate logits and ``A_ctx x``. ``FC_r``/``Emb_r`` repeat each gate's row
  for its expert's ``r`` rows, so gating is one same-shape product ``h = A_ctx x ⊙ act(logits)``
  over all layers;
- one in-place ``addmm_`` per layer adding ``h_m·(α/r)B_ctx,mᵀ`` to its output columns of ``p``.

The outputs are column views of ``p`` (as the split outputs of a fused qkv projection). The
first member called computes every member's output; the others' are kept with that input
(object identity and version counter) and the context's timesteps, and a member called next with
that same input returns its kept output: ``k = to_k(c); v = to_v(c)`` runs the group once. Any
other call order or input computes afresh (correct, just not shared). Under ``torch.compile``
nothing is kept: each member computes its own block (contiguous rows of ``W``) alone.

Buffers (non-persistent buffers of the members, so ``.to()`` and torch.compile see module state)
are allocated at the first member's merge and dropped when the last one unmerges; each member's
merged weight is a view of its rows of ``W``, so a switch writes each member's rows in place
(copies and one addmm per layer) and a compiled graph sees the same tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .layers import TSMLinear

__all__ = ["SharedInputGroup", "SHARED_INPUT_PAIRS", "link_shared_inputs"]

#: Sibling attribute names whose layers read the same input in the attention forwards we know
#: (VC2 ``CrossAttention``, diffusers ``Attention`` incl. SD3's joint ``add_*_proj``).
SHARED_INPUT_PAIRS: tuple[tuple[str, str], ...] = (("to_k", "to_v"), ("add_k_proj", "add_v_proj"))


class SharedInputGroup:
    """Merged stage-2 ``TSMLinear`` layers with identical TSM settings and widths that read one input.

    Shapes: ``G`` members of ``out`` outputs each, ``k`` context experts of rank ``r`` each, a
    block of ``E = out + 2·k·r`` rows per member, ``T`` timesteps. The first member holds
    ``fused_weight`` (G·E, in), ``fused_weight_t`` (its transpose, a view) and ``fused_bias``
    (T, G·E); every member its ``fused_b`` (k·r, out) = ``(α/r)·B_ctxᵀ`` of its interval.
    """

    def __init__(self, members: list[TSMLinear]) -> None:
        first = members[0]
        for layer in members:
            if (
                layer.mode != "assemble"
                or layer.merged_interval is not None
                or not _same_settings(layer, first)
            ):
                raise ValueError(
                    f"SharedInputGroup: {layer.tsm_name!r} needs unmerged assemble layers with the same "
                    "ctx, scales, rank, alpha, gate activation, widths, dtype and device"
                )
        self.members = list(members)
        self.ctx = first.ctx
        self.k, self.r, self.out = len(first.scales) - 1, first.rank, first.base.out_features
        self.block = self.out + 2 * self.k * self.r  # E
        self.gate = None if first.gate_activation == "none" else first.router.gate
        self.merged = [False] * len(members)
        self._kept: list[tuple | None] = [None] * len(members)
        for layer in members:
            layer.input_group = self

    @property
    def weight(self) -> Tensor | None:
        """(G·E, in): per member ``[W0 + ΔW; FC_r; A_ctx]``, or None while no member is merged."""
        return self.members[0].fused_weight

    def _rows(self, m: int) -> tuple[slice, slice, slice]:
        """Member ``m``'s rows of the fused weight: its merged weight, ``FC_r``, ``A_ctx``."""
        w0, kr = m * self.block, self.k * self.r
        f0 = w0 + self.out
        return slice(w0, f0), slice(f0, f0 + kr), slice(f0 + kr, f0 + 2 * kr)

    def merged_weight(self, layer: TSMLinear) -> Tensor:
        """The (out, in) view of the fused weight that holds ``layer``'s ``W0 + ΔW`` (allocating
        the group's buffers at the first member's merge)."""
        m, first = self.members.index(layer), self.members[0]
        if first.fused_weight is None:
            w = first.base.weight
            dd = {"device": w.device, "dtype": w.dtype}
            rows = len(self.members) * self.block
            weight = torch.zeros(rows, w.shape[1], **dd)
            bias = torch.zeros(first.ctx.num_timesteps, rows, **dd)
            for j, member in enumerate(self.members):  # bias, FC and Emb: the same for every interval
                rows_w, rows_f, _ = self._rows(j)
                if member.base.bias is not None:
                    bias[:, rows_w] = member.base.bias
                weight[rows_f] = member.router.fc.weight.repeat_interleave(self.r, dim=0)
                bias[:, rows_f] = member.router.emb.weight.repeat_interleave(self.r, dim=1)
            first.fused_weight, first.fused_weight_t, first.fused_bias = weight, weight.t(), bias
        self.merged[m] = True
        self._kept = [None] * len(self.members)
        return first.fused_weight[self._rows(m)[0]]

    def set_interval(self, layer: TSMLinear, a_ctx: Tensor, b_ctx: Tensor) -> None:
        """Write ``layer``'s context experts of its merged interval, in place: ``A_ctx`` (k·r, in)
        into its rows of the fused weight, ``(α/r)·B_ctxᵀ`` (k·r, out) into its ``fused_b``."""
        self.members[0].fused_weight[self._rows(self.members.index(layer))[2]] = a_ctx
        if layer.fused_b is None:
            layer.fused_b = b_ctx.clone()
        else:
            layer.fused_b.copy_(b_ctx)
        self._kept = [None] * len(self.members)

    def release(self, layer: TSMLinear) -> None:
        """``layer`` unmerged; the shared buffers go with the last merged member."""
        self.merged[self.members.index(layer)], layer.fused_b = False, None
        self._kept = [None] * len(self.members)
        if not any(self.merged):
            first = self.members[0]
            first.fused_weight = first.fused_weight_t = first.fused_bias = None

    def forward(self, layer: TSMLinear, x: Tensor) -> Tensor:
        """Member ``layer``'s output for ``x`` (N, ..., in) → (N, ..., out); N a multiple of the B
        timesteps set in the context (rows of one sample contiguous, batch outermost)."""
        m = 0 if layer is self.members[0] else self.members.index(layer)
        t_index = self.ctx.timestep_index()
        if torch.compiler.is_compiling():  # a traced graph keeps nothing between calls
            return self._compute(x, t_index, m, m + 1)[0]
        kept = self._kept[m]
        if kept is not None and kept[0] is x and kept[1] == x._version and kept[2] is t_index:
            self._kept[m] = None
            return kept[3]
        outs = self._compute(x, t_index, 0, len(self.members))
        if len(outs) > 1:
            version = x._version
            self._kept = [None if j == m else (x, version, t_index, o) for j, o in enumerate(outs)]
        return outs[m]

    def _compute(self, x: Tensor, t_index: Tensor, lo: int, hi: int) -> list[Tensor]:
        """Outputs of members ``lo..hi-1`` for ``x`` (N, ..., in) at the context's timesteps
        ``t_index`` (B,) (a member that is not merged gets a value nobody reads)."""
        nb, first = t_index.shape[0], self.members[0]
        first._check_fold(x.shape[0], nb)
        x2 = x.reshape(-1, x.shape[-1])  # (N·M, in), a sample's rows contiguous
        bias = F.embedding(t_index, first.fused_bias)  # (B, G·E): [b; Emb_r(t); 0] per member
        wt = first.fused_weight_t
        if hi - lo < len(self.members):  # members lo..hi-1: their contiguous blocks
            bias, wt = bias[:, lo * self.block : hi * self.block], wt[:, lo * self.block : hi * self.block]
        if nb == 1:  # the bias row rides in the addmm (a contiguous broadcast copy, then one GEMM)
            p = torch.addmm(bias, x2, wt)  # (N·M, g·E)
        else:
            p = torch.mm(x2, wt)
            p.view(nb, -1, p.shape[1]).add_(bias.unsqueeze(1))
        p = p.view(p.shape[0], hi - lo, self.block)  # (N·M, g, E)
        kr = self.k * self.r
        logits, a = p[:, :, self.out : self.out + kr], p[:, :, self.out + kr :]
        h = a * (logits if self.gate is None else self._gated(logits))  # (N·M, g, k·r), contiguous
        lead, outs = x.shape[:-1], []
        for pj, hj, member in zip(p.unbind(1), h.unbind(1), self.members[lo:hi]):
            y = pj[:, : self.out]
            if member.fused_b is not None:  # in place into p's columns (no copy of y)
                y.addmm_(hj, member.fused_b)
            outs.append(y.view(*lead, -1))
        return outs

    def _gated(self, logits: Tensor) -> Tensor:
        """The router's activation on ``logits`` (N·M, g, k·r) laid out (k, r), gates along k."""
        return self.gate(logits.unflatten(2, (self.k, self.r)), dim=2).flatten(2)


def _same_settings(a: TSMLinear, b: TSMLinear) -> bool:
    w, v = a.base.weight, b.base.weight
    return (
        a.ctx is b.ctx
        and (a.scales, a.rank, a.alpha, a.mode, a.gate_activation)
        == (b.scales, b.rank, b.alpha, b.mode, b.gate_activation)
        and w.shape == v.shape
        and w.dtype == v.dtype == a.adapter_dtype == b.adapter_dtype
        and w.device == v.device
    )


def link_shared_inputs(modules: dict, names: list[str]) -> int:
    """Group the stage-2 ``TSMLinear`` siblings among ``names`` that read one input
    (:data:`SHARED_INPUT_PAIRS`); ``modules`` maps dotted names to modules. Returns the number of
    groups formed (pairs whose settings differ, or that are merged, are left alone)."""
    from .layers import TSMLinear

    formed = 0
    for name in names:
        parent, _, attr = name.rpartition(".")
        for first, second in SHARED_INPUT_PAIRS:
            if attr != first:
                continue
            partner = f"{parent}.{second}" if parent else second
            a, b = modules.get(name), modules.get(partner)
            if (
                isinstance(a, TSMLinear)
                and isinstance(b, TSMLinear)
                and a.mode == "assemble"
                and a.merged_interval is None
                and b.merged_interval is None
                and _same_settings(a, b)
            ):
                SharedInputGroup([a, b])
                formed += 1
    return formed
