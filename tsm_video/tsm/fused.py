"""Merged stage-2 inference of ``TSMLinear`` layers, one matmul for the layers that read one input.

Stage 2 (paper Sec. 3.2) adds to the merged core ``(W0 + ΔW)·x`` the interval's context experts,
gated per token by ``g = act(FC(x) + Emb(t))``; the gate depends on ``x``, so they cannot be
merged. :class:`SharedInputGroup` evaluates ``G`` such layers that read the same input (``to_k``
and ``to_v`` of one attention; ``G = 1`` for a layer alone) in a fixed handful of ops:

- one ``mm`` (``addmm`` where a base layer has a bias): ``p = x·Wᵀ``, ``W`` stacking the rows
  ``[W0 + ΔW]_1..G | FC_1..G | A_ctx,1..G`` (each kind of row of every layer together; each
  gate's ``FC`` row repeated over its expert's ``r`` columns, so the gate logits come out lined
  up with ``A_ctx x``): ``p`` holds every layer's merged output, the gate logits ``FC x`` and
  ``A_ctx x`` — exactly the arithmetic the context experts need;
- in place in ``p``'s columns: ``Emb(t)`` added to the logits (when the whole batch is at one
  timestep, as in sampling, its row is picked on the host once per timestep, else one gather),
  the activation (none for the recipes' ``gate_activation: none``) and ``h = A_ctx x ⊙ g``;
- one in-place ``addmm_`` of ``h`` and the block-diagonal ``(α/r)·B_ctxᵀ`` of all layers into
  the output columns of ``p`` (zeros off the diagonal blocks: ``(G−1)·k·r·out`` more
  multiply-adds per token and layer, small next to the layer's ``in·out``, for one call
  instead of one per layer).

The outputs are column views of ``p`` (as the split outputs of a fused qkv projection). The
first member called computes every member's output; the others' are kept with that input
(object identity and version counter) and the context's :attr:`~.TimestepContext.generation`
(which interval switches bump too), and a member called next with that same input gets its
kept output once: ``k = to_k(c); v = to_v(c)`` runs the group once. Any other call order or
input computes afresh (correct, just not shared). Under ``torch.compile`` nothing is kept and no
timestep is read on the host: each member computes its own rows of ``W`` alone.

Buffers (non-persistent buffers of the first member, so ``.to()`` and torch.compile see module
state) are allocated at the first member's merge and dropped when the last one unmerges; each
member's merged weight is a view of its rows of ``W`` and its context experts are rows of ``W``
and a block of the ``B`` table, so a switch writes them in place
(:class:`~tsm_video.tsm.switch.SwitchPlan`: batched over the model) and a compiled graph sees
the same tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .layers import TSMLinear

__all__ = ["SharedInputGroup", "SHARED_INPUT_PAIRS", "link_shared_inputs"]

_is_compiling = torch.compiler.is_compiling  # read per call: one global lookup, not two attributes

#: Sibling attribute names whose layers read the same input in the attention forwards we know
#: (VC2 ``CrossAttention``, diffusers ``Attention`` incl. SD3's joint ``add_*_proj``).
SHARED_INPUT_PAIRS: tuple[tuple[str, str], ...] = (("to_k", "to_v"), ("add_k_proj", "add_v_proj"))


class SharedInputGroup:
    """Merged stage-2 ``TSMLinear`` layers with identical TSM settings and widths that read one input.

    Shapes: ``G`` members of ``out`` outputs each, ``k`` context experts of rank ``r`` each,
    ``E = out + 2·k·r`` rows of ``W`` per member, ``T`` timesteps. The first member holds the
    group's buffers: ``fused_weight`` (G·E, in) with rows ``[W0 + ΔW]_1..G | FC_1..G | A_ctx,1..G``
    (the same kind of rows of every member together; each ``FC`` row repeated ``r`` times),
    ``fused_bias`` (G·E) (the bases' biases, zero elsewhere; None when no base has one),
    ``fused_emb`` (T, G·k·r) (the routers' ``Emb`` side by side, each column repeated ``r``
    times) and ``fused_b`` (G·k·r, G·out), block diagonal: member ``m``'s block ``(α/r)·B_ctxᵀ``
    of its interval in rows ``m·k·r…`` and columns ``m·out…``.
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
        g, kr = len(members), self.k * self.r
        self.block = self.out + 2 * kr  # E
        self.sizes = [g * self.out, g * kr, g * kr]  # p's columns: [y | FC x + Emb(t) | A_ctx x]
        self.gate = None if first.gate_activation == "none" else first.router.gate
        # softmax mixes a member's k gates: over axis 2 of (N·M, G, k, r) (the r copies agree)
        self.gate_dim = 2 if first.gate_activation == "softmax" else None
        self.merged = [False] * g
        self._kept: tuple | None = None  # (input, its version, ctx generation, outputs not yet handed over)
        self._step: tuple[int, Tensor] | None = None  # (the batch's one timestep, its Emb row)
        # The first member's buffer dict, read on the hot path: one dict lookup where attribute
        # access goes through nn.Module.__getattr__ (after a failed normal lookup). ``.to()`` and
        # ``load_state_dict`` replace entries of this same dict, so it stays current.
        self._buffers = first._buffers
        for layer in members:
            layer.input_group = self

    @property
    def weight(self) -> Tensor | None:
        """(G·E, in): ``[W0 + ΔW]_1..G | FC_1..G | A_ctx,1..G``, or None while no member is merged."""
        return self.members[0].fused_weight

    def _rows(self, m: int) -> tuple[slice, slice, slice]:
        """Member ``m``'s rows of ``W``: its merged weight, its gate logits, its ``A_ctx``."""
        g, out, kr = len(self.members), self.out, self.k * self.r
        return (
            slice(m * out, (m + 1) * out),
            slice(g * out + m * kr, g * out + (m + 1) * kr),
            slice(g * (out + kr) + m * kr, g * (out + kr) + (m + 1) * kr),
        )

    @torch.no_grad()
    def merged_weight(self, layer: TSMLinear) -> Tensor:
        """The (out, in) view of the fused weight that holds ``layer``'s ``W0 + ΔW``, at the
        layer's first merge: allocates the group's buffers at the first member's, snapshots the
        layer's router (``FC`` rows, ``Emb`` columns; the same for every interval)."""
        m, first, g, kr = self.members.index(layer), self.members[0], len(self.members), self.k * self.r
        w = first.base.weight
        dd = {"device": w.device, "dtype": w.dtype}
        if first.fused_weight is None:
            first.fused_weight = torch.zeros(g * self.block, w.shape[1], **dd)
            if any(member.base.bias is not None for member in self.members):
                first.fused_bias = torch.zeros(g * self.block, **dd)
            first.fused_emb = torch.zeros(layer.ctx.num_timesteps, g * kr, **dd)
            first.fused_b = torch.zeros(g * kr, g * self.out, **dd)
        y_rows, fc_rows, _ = self._rows(m)
        first.fused_weight[fc_rows] = layer.router.fc.weight.repeat_interleave(self.r, dim=0)
        if layer.base.bias is not None:
            first.fused_bias[y_rows] = layer.base.bias
        first.fused_emb[:, m * kr : (m + 1) * kr] = layer.router.emb.weight.repeat_interleave(self.r, dim=1)
        self.merged[m], self._kept, self._step = True, None, None
        return first.fused_weight[y_rows]

    def context_targets(self, layer: TSMLinear) -> tuple[Tensor, Tensor]:
        """Where a merged ``layer``'s interval writes its context experts: its ``A_ctx`` rows of
        the fused weight (k·r, in) and its diagonal block of ``fused_b`` (k·r, out)."""
        m, first, kr = self.members.index(layer), self.members[0], self.k * self.r
        _, _, a_rows = self._rows(m)
        return first.fused_weight[a_rows], first.fused_b[
            m * kr : (m + 1) * kr, m * self.out : (m + 1) * self.out
        ]

    def release(self, layer: TSMLinear) -> None:
        """``layer`` unmerged (its own buffers dropped by the layer); the shared buffers go with
        the last merged member."""
        self.merged[self.members.index(layer)], self._kept, self._step = False, None, None
        if not any(self.merged):
            first = self.members[0]
            for name in first._group_buffers:
                setattr(first, name, None)

    def forward(self, layer: TSMLinear, x: Tensor) -> Tensor:
        """Member ``layer``'s output for ``x`` (N, ..., in) → (N, ..., out); N a multiple of the B
        timesteps set in the context (rows of one sample contiguous, batch outermost)."""
        m = self.members.index(layer)
        if _is_compiling():  # a traced graph keeps nothing between calls
            return self._compute(x, m)[0]
        kept, generation = self._kept, self.ctx.generation
        if kept is not None and kept[0] is x and kept[1] == x._version and kept[2] == generation:
            out = kept[3][m]
            if out is not None:
                kept[3][m] = None
                return out
        outs = self._compute(x)
        if len(outs) > 1:
            others = list(outs)
            others[m] = None
            self._kept = (x, x._version, generation, others)
        return outs[m]

    def _compute(self, x: Tensor, member: int | None = None) -> tuple[Tensor, ...]:
        """Outputs (N, ..., out) of every member (``member=None``: eager, the context's one
        timestep read on the host when the batch has one) or of ``member`` alone (its rows of
        ``W`` gathered; under torch.compile, where a traced graph would bake a host value in) for
        ``x`` (N, ..., in) at the context's timesteps. A member that is not merged gets a value
        nobody reads.

        A fixed handful of host-side calls whatever ``G`` and ``k`` — with the batch at one
        timestep and no activation: one ``linear``, one split, one add and one product in place,
        one ``addmm_`` and the outputs' view and split; at the small sizes of a tiny model, or a
        GPU, the path is bound by them, not by arithmetic."""
        buffers, ctx = self._buffers, self.ctx
        w, bias, b_ctx = buffers["fused_weight"], buffers["fused_bias"], buffers["fused_b"]
        sizes, g = self.sizes, len(self.members)
        t = ctx.single_timestep_index() if member is None else None
        self.members[0]._check_fold(x.shape[0], ctx.t.shape[0])
        if member is not None:  # one member: its three row blocks, its Emb columns, its B block
            rows, kr = self._rows(member), self.k * self.r
            w = torch.cat([w[r] for r in rows])
            bias = None if bias is None else torch.cat([bias[r] for r in rows])
            b_ctx = b_ctx[member * kr : (member + 1) * kr, rows[0]]
            g, sizes = 1, [self.out, kr, kr]
        p = F.linear(x.reshape(-1, x.shape[-1]), w, bias)  # (N·M, g·E), a sample's rows contiguous
        y, z, a = p.split_with_sizes(sizes, 1)  # (N·M, g·out), (N·M, g·k·r), (N·M, g·k·r): views
        if t is not None:  # the batch's one Emb(t) row, picked once per timestep
            if self._step is None or self._step[0] != t:
                self._step = t, buffers["fused_emb"][t]
            z.add_(self._step[1])
        else:  # each sample's row over its rows
            e = self._emb_rows(member)  # (B, g·k·r)
            z = (z.unflatten(0, (e.shape[0], -1)) + e.unsqueeze(1)).flatten(0, 1)
        if self.gate_dim:
            z = self.gate(z.unflatten(1, (-1, self.k, self.r)), dim=self.gate_dim).flatten(1)
        elif self.gate is not None:
            z = self.gate(z)
        y.addmm_(a.mul_(z), b_ctx)  # h = A_ctx x ⊙ g in p's columns, then y += h·(α/r)B_ctxᵀ
        return y.view(*x.shape[:-1], g * self.out).split_with_sizes([self.out] * g, -1)

    def _emb_rows(self, member: int | None) -> Tensor:
        """Each sample's ``Emb(t)`` row (B, G·k·r), or ``member``'s columns alone (B, k·r): for a
        batch at several timesteps, and under torch.compile."""
        emb = self._buffers["fused_emb"]
        if member is not None:
            kr = self.k * self.r
            emb = emb[:, member * kr : (member + 1) * kr]
        return emb[self.ctx.timestep_index()]


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
