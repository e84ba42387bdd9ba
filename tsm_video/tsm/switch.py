"""Interval switches of many merged TSM layers at once: a handful of batched calls per switch.

A merged layer holds ``W0 + ΔW_i`` of its core interval ``i`` in a buffer (``W0`` is never
written; see :meth:`~tsm_video.tsm.TSMLayer.merge`). At its first merge it gathers
:class:`MergeTables`: ``(α/r)·B`` and ``A`` of every core interval in float32, views of ``W0``
and of the merged weight flattened to (out, K), ``K = in·prod(kernel)``, and for the fused
stage-2 path the per-interval context-expert tables with where they go.

Per layer, a switch is ``bmm`` (a batch of one) of ``(α/r)·B_i`` and ``A_i`` in float32, ``+ W0``,
and one rounding into the merged weight. :class:`SwitchPlan` does the same arithmetic for a
list of layers grouped by (merged-weight shape, dtype, device, core scale, rank; large groups in
chunks, see :attr:`SwitchPlan.scratch_elements`): per group one
``bmm`` of the stacked tables (n, L, out, r) × (n, L, r, K) into a float32 scratch, one
``_foreach_add_`` of the ``W0`` s and one ``_foreach_copy_`` into the merged weights; the context
tables of all fused stage-2 layers in one ``_foreach_copy_``, skipped when the new interval's
context experts are the ones already there (with scales [8, 1], every switch). Each element goes
through the same float32 operations on both paths (a ``bmm`` over a batch computes each matrix
as alone: contraction length ``r``, same shape and strides), so a plan's switch writes the bits
``layer.merge`` writes. The layers' state (``merged_interval``, the context's pins) is updated as
``merge`` would; a plan whose layers were merged, unmerged or switched by anything else since it
last ran falls back to ``layer.merge`` per layer and gathers itself again.

With ``keep=True`` the plan also keeps a copy of the merged weights of every interval it has
computed (what depends only on the interval, the issue's "precompute"): a later switch to that
interval is one ``_foreach_copy_`` of the kept weights (one memory pass, the same bits), for
``n`` copies of the adapted weights' memory (full VC2's 132 ``to_k``/``to_v``: 101 M elements,
8 × 202 MB in fp16). Intervals are kept as sampling first reaches them.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .layers import TSMLayer

__all__ = ["MergeTables", "SwitchPlan"]


class MergeTables(NamedTuple):
    """What a merged layer's switch reads, gathered (detached) at its first merge."""

    w0: Tensor  #: (out, K) view of ``W0``
    target: Tensor  #: (out, K) view of the merged weight
    b: Tensor  #: (n, 1, out, r) float32 ``(α/r)·B_i`` of every core interval
    a: Tensor  #: (n, 1, r, K) float32 ``A_i``
    context: list[tuple[Tensor, list[Tensor]]]  #: fused stage 2: (target, per-interval tables)
    context_rows: list[tuple[int, ...]]  #: fused stage 2: bank rows of each interval's context experts


class SwitchPlan:
    """Switches the core interval of ``layers`` (one core scale; TSM layers with a core expert)
    with a few batched calls; see the module docstring. The first :meth:`switch` merges each
    layer (its first merge) and gathers the stacked tables (adapter-sized) and a float32 scratch
    as large as the largest group's merged weights, or :attr:`scratch_elements` (groups larger
    than that are switched in chunks of layers)."""

    #: float32 elements of the scratch at most (64 MiB; one layer's merged weight when larger):
    #: full VC2's largest group (36 to_k/to_v of 1280 × 1280) would take 225 MiB in one piece,
    #: in chunks of 10 layers 63 MiB, for 4 batched calls instead of 1 on a 1.4 B model.
    scratch_elements: int = 1 << 24

    def __init__(self, layers: list[TSMLayer], keep: bool = False) -> None:
        cores = {layer.scales[0] for layer in layers}
        if len(cores) > 1 or any(layer.mode == "moe" for layer in layers):
            raise ValueError(f"SwitchPlan: layers need one core scale and a core expert, got scales {cores}")
        self.layers = list(layers)
        self.keep = keep
        self.release()

    def release(self) -> None:
        """Drop what the plan gathered (stacked tables, scratch); the next :meth:`switch` merges
        per layer and gathers again. The layers' merged state is not touched."""
        self.current: int | None = None
        self._tables: list[MergeTables | None] = []  # each layer's tables when the plan was gathered
        self._groups: list[tuple] = []  # (targets, W0s, B per interval, A per interval, scratch, its rows)
        self._contexts: list[tuple] = []  # (context rows per interval, targets, tables per interval)
        self._pins: list[tuple] = []  # (ctx, core scale, layers pinned)
        self._stale: list = []  # contexts whose kept stage-2 outputs a switch makes stale
        self._targets: list[Tensor] = []  # every layer's merged weight ((out, K) views)
        self._kept: dict[int, list[Tensor]] = {}  # with ``keep``: interval -> copies of _targets

    def switch(self, interval: int) -> None:
        """Merge core expert ``interval`` in every layer (a no-op where it already is)."""
        current = self.current
        if current is None or any(
            layer._merge_views is not tables or layer.merged_interval != current
            for layer, tables in zip(self.layers, self._tables)
        ):
            for layer in self.layers:
                layer.merge(interval)
            self._gather(interval)
            return
        if interval == current:
            return
        if not 0 <= interval < self.layers[0].scales[0]:
            raise ValueError(f"interval {interval} out of range for core scale {self.layers[0].scales[0]}")
        kept = self._kept.get(interval)
        if kept is not None:
            torch._foreach_copy_(self._targets, kept)
        else:
            for targets, w0s, b, a, scratch, rows in self._groups:
                torch.bmm(b[interval], a[interval], out=scratch)  # (L, out, K) float32
                torch._foreach_add_(rows, w0s)
                torch._foreach_copy_(targets, rows)  # one rounding to the weights' dtype
            self._keep(interval)
        for context_rows, targets, tables in self._contexts:
            if context_rows[interval] != context_rows[current]:
                torch._foreach_copy_(targets, tables[interval])
        for ctx, core, count in self._pins:
            ctx.unpin(core, current, count)
            ctx.pin(core, interval, count)
        for ctx in self._stale:
            ctx.generation += 1
        for layer in self.layers:
            vars(layer)["merged_interval"] = interval  # as TSMLayer.merge sets it
        self.current = interval

    @torch.no_grad()
    def _gather(self, interval: int) -> None:
        """Stack the tables of layers merged at ``interval`` into groups (see the module docstring)."""
        self._tables = [layer._merge_views for layer in self.layers]
        by_key: dict[tuple, list[MergeTables]] = {}
        contexts: dict[tuple, list[MergeTables]] = {}
        for tables in self._tables:
            t, (n, *_, rank) = tables.target, tables.b.shape
            by_key.setdefault((t.shape, t.dtype, t.device, n, rank), []).append(tables)
            if tables.context:
                contexts.setdefault(tuple(tables.context_rows), []).append(tables)
        chunks = []  # (shape, device, layers): at most scratch_elements of merged weights each
        for (shape, _, device, _, _), group in by_key.items():
            per_chunk = max(1, self.scratch_elements // shape.numel())
            chunks += [(shape, device, group[i : i + per_chunk]) for i in range(0, len(group), per_chunk)]
        scratch: dict[torch.device, Tensor] = {}
        for shape, device, group in chunks:
            size = len(group) * shape.numel()
            if device not in scratch or scratch[device].numel() < size:
                scratch[device] = torch.empty(size, dtype=torch.float32, device=device)
        self._groups = []
        for shape, device, group in chunks:
            rows = scratch[device][: len(group) * shape.numel()].view(len(group), *shape)
            self._groups.append(
                (
                    [tables.target for tables in group],
                    [tables.w0 for tables in group],
                    list(torch.cat([tables.b for tables in group], dim=1).unbind(0)),  # (L, out, r) each
                    list(torch.cat([tables.a for tables in group], dim=1).unbind(0)),  # (L, r, K) each
                    rows,
                    list(rows.unbind(0)),
                )
            )
        self._contexts = []
        for context_rows, group in contexts.items():
            targets = [target for tables in group for target, _ in tables.context]
            per_interval = [
                [table[i] for tables in group for _, table in tables.context]
                for i in range(len(context_rows))
            ]
            self._contexts.append((list(context_rows), targets, per_interval))
        pins = Counter((layer.ctx, layer.scales[0]) for layer in self.layers if layer.ctx is not None)
        self._pins = [(ctx, core, count) for (ctx, core), count in pins.items()]
        fused = [layer.ctx for layer, tables in zip(self.layers, self._tables) if tables.context]
        self._stale = list({id(ctx): ctx for ctx in fused}.values())
        self._targets = [tables.target for tables in self._tables]
        self._kept = {}
        self._keep(interval)
        self.current = interval

    def _keep(self, interval: int) -> None:
        """With ``keep``: a copy of the merged weights, which now hold ``interval``'s experts."""
        if self.keep:
            self._kept[interval] = [target.clone() for target in self._targets]
