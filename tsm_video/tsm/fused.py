"""Merged stage-2 inference of ``TSMLinear`` layers, one matmul for the layers that read one input.

Stage 2 (paper Sec. 3.2) adds to the merged core ``(W0 + ΔW)·x`` the interval's context experts,
gated per token by ``g = act(FC(x) + Emb(t))``; the gate depends on ``x``, so they cannot be
merged. :class:`SharedInputGroup` evaluates ``G`` such layers that read the same input (``to_k``
and ``to_v`` of one attention; ``G = 1`` for a layer alone) in a fixed handful of ops:

- one ``mm`` (``addmm`` where a base layer has a bias): ``p = x·Wᵀ``, ``W`` stacking the rows
  ``[W0 + ΔW]_1..G | FC_1..G | A_ctx,1..G`` (each kind of row of every layer together): ``p``
  holds every layer's merged output, gate logits ``FC x`` and ``A_ctx x`` — exactly the
  arithmetic the context experts need;
- the gates of all layers at once: ``Emb(t)`` (the routers' tables side by side) added to the
  logits (one row picked on the host when the batch shares one timestep, as in sampling, else
  one ``embedding``), the activation, and ``h = A_ctx x ⊙ g`` as one product (each gate
  gathered over its expert's ``r`` columns);
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

#: Sibling attribute names whose layers read the same input in the attention forwards we know
#: (VC2 ``CrossAttention``, diffusers ``Attention`` incl. SD3's joint ``add_*_proj``).
SHARED_INPUT_PAIRS: tuple[tuple[str, str], ...] = (("to_k", "to_v"), ("add_k_proj", "add_v_proj"))


class SharedInputGroup:
    """Merged stage-2 ``TSMLinear`` layers with identical TSM settings and widths that read one input.

    Shapes: ``G`` members of ``out`` outputs each, ``k`` context experts of rank ``r`` each,
    ``E = out + k + k·r`` rows of ``W`` per member, ``T`` timesteps. The first member holds the
    group's buffers: ``fused_weight`` (G·E, in) with rows ``[W0 + ΔW]_1..G | FC_1..G | A_ctx,1..G``
    (the same kind of rows of every member together), ``fused_bias`` (G·E) (the bases' biases,
    zero elsewhere; None when no base has one), ``fused_emb`` (T, G·k) (the routers' ``Emb``
    side by side) and ``fused_b`` (G·k·r, G·out), block diagonal: member ``m``'s block
    ``(α/r)·B_ctxᵀ`` of its interval in rows ``m·k·r…`` and columns ``m·out…``.
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
        g = len(members)
        self.block = self.out + self.k + self.k * self.r  # E
        self.sizes = [g * self.out, g * self.k, g * self.k * self.r]  # p's columns: [y | FC x | A_ctx x]
        self.gate = None if first.gate_activation == "none" else first.router.gate
        self.softmax = first.gate_activation == "softmax"  # the only gate that mixes a member's k logits
        self.merged = [False] * g
        self._kept: tuple | None = None  # (input, its version, ctx generation, outputs not yet handed over)
        self._repeat: Tensor | None = None  # while merged: gate index of each A_ctx column (see _gated)
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
        g, out, k, kr = len(self.members), self.out, self.k, self.k * self.r
        return (
            slice(m * out, (m + 1) * out),
            slice(g * out + m * k, g * out + (m + 1) * k),
            slice(g * (out + k) + m * kr, g * (out + k) + (m + 1) * kr),
        )

    @torch.no_grad()
    def merged_weight(self, layer: TSMLinear) -> Tensor:
        """The (out, in) view of the fused weight that holds ``layer``'s ``W0 + ΔW``, at the
        layer's first merge: allocates the group's buffers at the first member's, snapshots the
        layer's router (``FC`` rows, ``Emb`` columns; the same for every interval)."""
        m, first, g = self.members.index(layer), self.members[0], len(self.members)
        w = first.base.weight
        dd = {"device": w.device, "dtype": w.dtype}
        if first.fused_weight is None:
            first.fused_weight = torch.zeros(g * self.block, w.shape[1], **dd)
            if any(member.base.bias is not None for member in self.members):
                first.fused_bias = torch.zeros(g * self.block, **dd)
            first.fused_emb = torch.zeros(layer.ctx.num_timesteps, g * self.k, **dd)
            first.fused_b = torch.zeros(g * self.k * self.r, g * self.out, **dd)
            self._repeat = torch.arange(g * self.k, device=w.device).repeat_interleave(self.r)  # (g·k·r,)
        y_rows, fc_rows, _ = self._rows(m)
        first.fused_weight[fc_rows] = layer.router.fc.weight
        if layer.base.bias is not None:
            first.fused_bias[y_rows] = layer.base.bias
        first.fused_emb[:, m * self.k : (m + 1) * self.k] = layer.router.emb.weight
        self.merged[m], self._kept = True, None
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
        self.merged[self.members.index(layer)], self._kept = False, None
        if not any(self.merged):
            first = self.members[0]
            first.fused_weight = first.fused_bias = first.fused_emb = first.fused_b = None
            self._repeat = None

    def forward(self, layer: TSMLinear, x: Tensor) -> Tensor:
        """Member ``layer``'s output for ``x`` (N, ..., in) → (N, ..., out); N a multiple of the B
        timesteps set in the context (rows of one sample contiguous, batch outermost)."""
        m = self.members.index(layer)
        if torch.compiler.is_compiling():  # a traced graph keeps nothing between calls
            return self._compute(x, m)[0]
        kept, generation = self._kept, self.ctx.generation
        if kept is not None and kept[0] is x and kept[1] == x._version and kept[2] == generation:
            out = kept[3][m]
            if out is not None:
                kept[3][m] = None
                return out
        outs = self._compute(x)
        if len(outs) > 1:
            self._kept = (x, x._version, generation, [None if j == m else o for j, o in enumerate(outs)])
        return outs[m]

    def _compute(self, x: Tensor, member: int | None = None) -> tuple[Tensor, ...]:
        """Outputs (N, ..., out) of every member (``member=None``: eager, the context's one
        timestep read on the host when the batch has one) or of ``member`` alone (its rows of
        ``W`` gathered; under torch.compile, where a traced graph would bake a host value in) for
        ``x`` (N, ..., in) at the context's timesteps. A member that is not merged gets a value
        nobody reads.

        A fixed handful of host-side calls whatever ``G`` and ``k``: one ``linear``, one split,
        the gates of all members (one add, the activation, one gather, one product) and one
        ``addmm_``; at
        the small sizes of a tiny model, or a GPU, the path is bound by them, not by arithmetic."""
        buffers = self._buffers
        self.members[0]._check_fold(x.shape[0], self.ctx.t.shape[0])
        w, bias, emb, b_ctx = (buffers[n] for n in ("fused_weight", "fused_bias", "fused_emb", "fused_b"))
        g, sizes, repeat = len(self.members), self.sizes, self._repeat
        if member is not None:  # one member: its three row blocks, its Emb columns, its B block
            rows = self._rows(member)
            w = torch.cat([w[r] for r in rows])
            bias = None if bias is None else torch.cat([bias[r] for r in rows])
            emb = emb[:, member * self.k : (member + 1) * self.k]
            kr = self.k * self.r
            b_ctx = b_ctx[member * kr : (member + 1) * kr, rows[0]]
            g, sizes, repeat = 1, [self.out, self.k, kr], repeat[:kr]  # member 0's gate index
        p = F.linear(x.reshape(-1, x.shape[-1]), w, bias)  # (N·M, g·E), a sample's rows contiguous
        y, logits, a = p.split(sizes, dim=1)  # (N·M, g·out), (N·M, g·k), (N·M, g·k·r): views
        t = self.ctx.single_timestep_index() if member is None else None
        y.addmm_(
            self._gated(a, logits, emb, t, repeat), b_ctx
        )  # in place into p's columns: y += h·(α/r)B_ctxᵀ
        return y.view(*x.shape[:-1], g * self.out).split(self.out, dim=-1)

    def _gated(self, a: Tensor, logits: Tensor, emb: Tensor, t: int | None, repeat: Tensor) -> Tensor:
        """``h = A_ctx x ⊙ act(FC x + Emb(t))`` (N·M, g·k·r), each gate over its expert's r columns
        (``repeat`` (g·k·r,): the gate of each column); ``t`` the batch's one timestep, or None:
        each sample's row of ``emb`` (T, g·k)."""
        if t is not None:
            z = logits + emb.select(0, t)  # (N·M, g·k) + (g·k,)
        else:
            t_index = self.ctx.timestep_index()  # (B,), rows of one sample contiguous
            z = (logits.unflatten(0, (t_index.shape[0], -1)) + emb[t_index].unsqueeze(1)).flatten(0, 1)
        if self.softmax:  # over each member's k gates
            z = self.gate(z.unflatten(1, (-1, self.k)), dim=2).flatten(1)
        elif self.gate is not None:
            z = self.gate(z)
        # each gate repeated over its expert's r columns (one gather; a broadcasting product over
        # (N·M, g·k, r) views of p's strided columns measured 3× slower on CPU), then one product
        return a * z.index_select(1, repeat)


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
