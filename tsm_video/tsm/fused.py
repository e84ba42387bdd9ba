"""Merged stage-2 inference of ``TSMLinear`` layers, one matmul for the layers that read one input.

Stage 2 (paper Sec. 3.2) adds to the merged core ``(W0 + ΔW)·x`` the interval's context experts,
gated per token by ``g = act(FC(x) + Emb(t))``; the gate depends on ``x``, so they cannot be
merged. :class:`SharedInputGroup` evaluates ``G`` such layers that read the same input (``to_k``
and ``to_v`` of one attention; ``G = 1`` for a layer alone) in a fixed handful of ops:

- one ``mm`` (``addmm`` where a base layer has a bias): ``p = x·Wᵀ``, ``W`` stacking per layer the
  block ``[W0 + ΔW; FC; A_ctx]`` ((out + k + k·r), in): ``p`` holds every layer's merged output,
  gate logits ``FC x`` and ``A_ctx x`` — exactly the arithmetic the context experts need;
- the gates of all layers at once: ``Emb(t)`` added to the logits (one row picked on the host
  when the batch shares one timestep, as in sampling, else one ``embedding``), the activation,
  and ``h = A_ctx x ⊙ g`` (each gate broadcast over its expert's ``r`` rows);
- one in-place ``addmm_`` per layer adding ``h_m·(α/r)B_ctx,mᵀ`` to its output columns of ``p``.

The outputs are column views of ``p`` (as the split outputs of a fused qkv projection). The
first member called computes every member's output; the others' are kept with that input
(object identity and version counter) and the context's :attr:`~.TimestepContext.generation`,
and a member called next with that same input gets its kept output once: ``k = to_k(c);
v = to_v(c)`` runs the group once. Any other call order or input computes afresh (correct, just
not shared). Under ``torch.compile`` nothing is kept and no timestep is read on the host: each
member computes its own block (contiguous rows of ``W``) alone.

Buffers (non-persistent buffers of the first member, so ``.to()`` and torch.compile see module
state) are allocated at the first member's merge and dropped when the last one unmerges; each
member's merged weight is a view of its rows of ``W``, so a switch writes each member's rows in
place (copies and one addmm per layer) and a compiled graph sees the same tensors.
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
    block of ``E = out + k + k·r`` rows per member, ``T`` timesteps. The first member holds
    ``fused_weight`` (G·E, in) and ``fused_bias`` (G·E) (the bases' biases, zero elsewhere; None
    when no base has one); every merged member its ``fused_emb`` (T, k) (its router's ``Emb``)
    and ``fused_b`` (k·r, out) (``(α/r)·B_ctxᵀ`` of its interval).
    """

    def __init__(self, members: list[TSMLinear]) -> None:
        first = members[0]
        for layer in members:
            if not _groupable(layer, first):
                raise ValueError(
                    f"SharedInputGroup: {layer.tsm_name!r} needs unmerged assemble layers with the same "
                    "ctx, scales, rank, alpha, gate activation, widths, dtype and device"
                )
        self.members = list(members)
        self.ctx = first.ctx
        self.k, self.r, self.out = len(first.scales) - 1, first.rank, first.base.out_features
        self.block = self.out + self.k + self.k * self.r  # E
        self.sizes = [self.out, self.k, self.k * self.r] * len(members)  # p's columns: [y, FC x, A_ctx x]
        self.gate = None if first.gate_activation == "none" else first.router.gate
        self.merged = [False] * len(members)
        self._kept: tuple | None = None  # (input, its version, ctx generation, outputs not yet handed over)
        # The members' buffer dicts, read on the hot path: one dict lookup where attribute access
        # goes through nn.Module.__getattr__ (after a failed normal lookup). ``.to()`` and
        # ``load_state_dict`` replace entries of these same dicts, so they stay current.
        self._buffers = [layer._buffers for layer in members]
        for layer in members:
            layer.input_group = self

    @property
    def weight(self) -> Tensor | None:
        """(G·E, in): per member ``[W0 + ΔW; FC; A_ctx]``, or None while no member is merged."""
        return self.members[0].fused_weight

    @torch.no_grad()
    def merged_weight(self, layer: TSMLinear) -> Tensor:
        """The (out, in) view of the fused weight that holds ``layer``'s ``W0 + ΔW``, at the
        layer's first merge: allocates the group's buffers at the first member's, snapshots the
        layer's router (``FC`` rows, ``Emb``; the same for every interval)."""
        m, first, e = self.members.index(layer), self.members[0], self.block
        w = first.base.weight
        dd = {"device": w.device, "dtype": w.dtype}
        if first.fused_weight is None:
            first.fused_weight = torch.zeros(len(self.members) * e, w.shape[1], **dd)
            if any(member.base.bias is not None for member in self.members):
                first.fused_bias = torch.zeros(len(self.members) * e, **dd)
        rows = first.fused_weight.narrow(0, m * e, e)
        rows[self.out : self.out + self.k] = layer.router.fc.weight
        if layer.base.bias is not None:
            first.fused_bias[m * e : m * e + self.out] = layer.base.bias
        layer.fused_emb = layer.router.emb.weight.clone()  # (T, k)
        layer.fused_b = torch.zeros(self.k * self.r, self.out, **dd)
        self.merged[m], self._kept = True, None
        return rows[: self.out]

    def context_targets(self, layer: TSMLinear) -> tuple[Tensor, Tensor]:
        """Where a merged ``layer``'s interval writes its context experts: its ``A_ctx`` rows of
        the fused weight (k·r, in) and its ``fused_b`` (k·r, out) for ``(α/r)·B_ctxᵀ``."""
        start = self.members.index(layer) * self.block + self.out + self.k
        return self.members[0].fused_weight[start : start + self.k * self.r], layer.fused_b

    def release(self, layer: TSMLinear) -> None:
        """``layer`` unmerged (its own buffers dropped by the layer); the shared buffers go with
        the last merged member."""
        self.merged[self.members.index(layer)], self._kept = False, None
        if not any(self.merged):
            first = self.members[0]
            first.fused_weight = first.fused_bias = None

    def forward(self, layer: TSMLinear, x: Tensor) -> Tensor:
        """Member ``layer``'s output for ``x`` (N, ..., in) → (N, ..., out); N a multiple of the B
        timesteps set in the context (rows of one sample contiguous, batch outermost)."""
        m = self.members.index(layer)
        if torch.compiler.is_compiling():  # a traced graph keeps nothing between calls
            return self._compute(x, m, m + 1, host_t=False)[0]
        kept, generation = self._kept, self.ctx.generation
        if kept is not None and kept[0] is x and kept[1] == x._version and kept[2] == generation:
            out = kept[3][m]
            if out is not None:
                kept[3][m] = None
                return out
        outs = self._compute(x, 0, len(self.members))
        if len(outs) > 1:
            self._kept = (x, x._version, generation, [None if j == m else o for j, o in enumerate(outs)])
        return outs[m]

    def _compute(self, x: Tensor, lo: int, hi: int, host_t: bool = True) -> list[Tensor]:
        """Outputs of members ``lo..hi-1`` for ``x`` (N, ..., in) at the context's timesteps (a
        member that is not merged gets a value nobody reads). ``host_t``: use the batch's one
        timestep as a host integer when it has one (eager only: a traced graph would bake it in).

        Few host-side calls (one ``linear``, one ``split``, five ops per member): at the small
        sizes of a tiny model, or a GPU, the path is bound by them, not by arithmetic."""
        first, e = self._buffers[0], self.block
        self.members[0]._check_fold(x.shape[0], self.ctx.t.shape[0])
        w, bias = first["fused_weight"], first["fused_bias"]
        if hi - lo < len(self.members):  # members lo..hi-1: their contiguous blocks
            w = w.narrow(0, lo * e, (hi - lo) * e)
            bias = None if bias is None else bias.narrow(0, lo * e, (hi - lo) * e)
        p = F.linear(x.reshape(-1, x.shape[-1]), w, bias)  # (N·M, g·E), a sample's rows contiguous
        parts = p.split(self.sizes[: 3 * (hi - lo)], dim=1)  # per member y, FC x, A_ctx x: views
        t = self.ctx.single_timestep_index() if host_t else None
        lead, outs = x.shape[:-1], []
        for j, buffers in enumerate(self._buffers[lo:hi]):
            y, logits, a = parts[3 * j : 3 * j + 3]  # (N·M, out), (N·M, k), (N·M, k·r)
            b_ctx = buffers["fused_b"]
            if b_ctx is not None:  # merged: in place into p's columns, y += h·(α/r)B_ctxᵀ
                y.addmm_(self._gated(a, logits, buffers["fused_emb"], t), b_ctx)
            outs.append(y.view(*lead, -1))
        return outs

    def _gated(self, a: Tensor, logits: Tensor, emb: Tensor, t: int | None) -> Tensor:
        """``h = A_ctx x ⊙ act(FC x + Emb(t))`` (N·M, k·r), each gate over its expert's r rows;
        ``t`` the batch's one timestep, or None: each sample's row of ``emb`` (T, k)."""
        if t is not None:
            z = logits + emb.select(0, t)  # (N·M, k) + (k,)
        else:
            t_index = self.ctx.timestep_index()  # (B,), rows of one sample contiguous
            z = (logits.unflatten(0, (t_index.shape[0], -1)) + emb[t_index].unsqueeze(1)).flatten(0, 1)
        gates = z if self.gate is None else self.gate(z, dim=1)
        if self.k > 1:  # (N·M, k·r): each gate over its expert's r columns, a same-shape product
            gates = gates.repeat_interleave(self.r, dim=1)
        return a * gates  # one context expert: its (N·M, 1) gates broadcast as they are


def _groupable(layer: TSMLinear, first: TSMLinear) -> bool:
    """Whether ``layer`` may join a group led by ``first``: unmerged, stage 2, same settings."""
    return layer.mode == "assemble" and layer.merged_interval is None and _same_settings(layer, first)


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
            pair = (a, b)
            if all(isinstance(m, TSMLinear) for m in pair) and all(_groupable(m, a) for m in pair):
                SharedInputGroup([a, b])
                formed += 1
    return formed
