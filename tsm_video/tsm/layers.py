"""TSM layers: a frozen base ``nn.Linear``/``nn.ConvNd`` plus stacked interval experts of every scale.

Expert ``i`` of scale ``n`` is row ``i`` of the banks ``lora_A[f"s{n}"]`` (n, r, in[, *k]) and
``lora_B[f"s{n}"]`` (n, out, r); its export name is ``s{n}_i{i}``. A forward gathers each
sample's experts from the concatenated banks (one index op) and applies them with batched
matmuls (or one grouped conv): no Python loop over samples or experts.

Merging (inference) writes ``W0 + ΔW_i`` of the core expert into a separate buffer
(``merged_weight``); the base weight ``W0`` is never written, so unmerging is exact after any
number of switches and writes nothing. The layer's ``forward`` is bound at merge/unmerge time,
so the merged hot path carries no state checks: a merged stage-1 layer is one base-sized
linear/conv with the merged weight; a merged stage-2 ``TSMLinear`` runs the fused path of
:mod:`tsm_video.tsm.fused` (its merged core, its interval's context experts and the router in
two matmuls, shared with the sibling layer that reads the same input; tables gathered at the
first merge, copied per switch when the context experts change). ``merge`` switches one layer;
:class:`~tsm_video.tsm.switch.SwitchPlan` switches many at once with the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .context import TimestepContext
from .fused import SharedInputGroup
from .router import Router
from .switch import MergeTables

__all__ = ["TSMLayer", "TSMLinear", "TSMConv", "MODES"]

MODES = ("foster", "assemble", "moe")


class TSMLayer(nn.Module):
    """Shared state and forward of TSM layers.

    ``y = W0·x + (α/r)·Σ_k w_k · B_k A_k x`` over the experts ``k`` selected by each sample's ``t``:

    - ``foster``: one scale, its expert of ``t`` with ``w = 1`` (scale 1 = vanilla LoRA, no ctx).
    - ``assemble``: finest scale = core (``w = 1``); the other scales' experts of ``t`` are
      context experts weighted per token by a centred :class:`Router` (zero at init).
    - ``moe``: symmetric ablation; every selected expert is gated by an uncentred router (with
      activation ``none`` it starts at ``W0`` alone, with ``softmax`` at the experts' mean).

    Input rows may fold extra axes into the batch (``(b f)``, ``(b h w)``), batch outermost:
    with ``N`` rows and ``B`` timesteps, rows ``[b·N/B, (b+1)·N/B)`` belong to sample ``b``.
    """

    adapter_param_names = ("lora_A", "lora_B")
    router_param_names = ("router",)

    _channel_dim = -1  # channel axis of the layer's input/output (and of the router's gates)
    _fused_buffers = ("fused_tables_a", "fused_tables_b")  # tsm.fused, per layer
    _group_buffers = (
        "fused_weight",
        "fused_bias",
        "fused_emb",
        "fused_b",
    )  # tsm.fused, on a group's first member

    def __init__(
        self,
        base: nn.Module,
        ctx: TimestepContext | None,
        scales: list[int],
        rank: int = 4,
        alpha: float = 4.0,
        mode: str = "foster",
        gate_activation: str = "none",
        dtype: torch.dtype | None = None,
    ) -> None:
        """Wrap ``base``; ``gate_activation`` is used by a router (modes assemble/moe) only."""
        super().__init__()
        scales = sorted((int(n) for n in scales), reverse=True)
        if mode not in MODES:
            raise ValueError(f"unknown TSM mode {mode!r}; valid: {', '.join(MODES)}")
        if not scales or len(set(scales)) != len(scales) or scales[-1] < 1:
            raise ValueError(f"scales must be distinct positive integers, got {scales}")
        if (mode == "foster") != (len(scales) == 1):
            raise ValueError(
                f"mode {mode!r} needs {'one scale' if mode == 'foster' else '>= 2 scales'}, got {scales}"
            )
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if ctx is None and scales != [1]:
            raise ValueError(f"scales {scales} need a TimestepContext (only a scale-1 LoRA runs without one)")
        self.base, self.ctx = base, ctx
        self.scales, self.rank, self.alpha, self.scaling = tuple(scales), rank, float(alpha), alpha / rank
        self.mode, self.gate_activation = mode, gate_activation
        self.offsets = tuple(sum(scales[:k]) for k in range(len(scales)))
        self.merged_interval: int | None = None
        self.tsm_name = ""
        self.input_group: SharedInputGroup | None = None  # TSMLinear stage 2: see tsm.fused
        self._merge_views: MergeTables | None = None  # while merged: what a switch reads (tsm.switch)
        # Inference state (non-persistent, allocated while merged): W0 + ΔW of the merged core
        # (for a stage-2 TSMLinear on the fused path, a view of its SharedInputGroup's weight);
        # for such a layer also A_ctx (n, k·r, in) and (α/r)·B_ctxᵀ (n, k·r, out) of every core
        # interval, gathered at the first merge (adapter-sized), so a switch is two copies.
        self.register_buffer("merged_weight", None, persistent=False)
        for name in (*self._fused_buffers, *self._group_buffers):
            self.register_buffer(name, None, persistent=False)
        w = base.weight
        dd = {"device": w.device, "dtype": dtype or w.dtype}
        out = w.shape[0]
        a_tail = tuple(w.shape[1:])  # in[, *kernel]
        self.lora_A = nn.ParameterDict({f"s{n}": torch.empty(n, rank, *a_tail, **dd) for n in scales})
        self.lora_B = nn.ParameterDict({f"s{n}": torch.zeros(n, out, rank, **dd) for n in scales})
        for bank in self.lora_A.values():
            for a in bank.data:  # init only: kaiming-uniform per expert, fan_in = in·prod(kernel)
                nn.init.kaiming_uniform_(a.view(rank, -1), a=math.sqrt(5))
        self.router: Router | None = None
        if mode != "foster":
            gates = len(scales) - 1 if mode == "assemble" else len(scales)
            self.router = Router(
                self._gate_fc(gates, dd),
                ctx.num_timesteps,
                gates,
                gate_activation,
                centred=mode == "assemble",
                channel_dim=self._channel_dim,
            )

    def _gate_fc(self, gates: int, dd: dict) -> nn.Module:
        raise NotImplementedError

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """``(α/r)·Σ_k w_k B_k A_k x`` per sample with the gathered experts, shaped like ``base(x)``."""
        raise NotImplementedError

    def _weights(self, logits: Tensor) -> Tensor:
        """Per-token expert weights from router logits ``FC(x)``; in assemble the core's weight 1 first."""
        g = self.router.activate(logits, self.ctx.timestep_index().to(logits.device))
        if self.mode == "assemble" and self.merged_interval is None:
            g = torch.cat([torch.ones_like(g.narrow(self._channel_dim, 0, 1)), g], dim=self._channel_dim)
        return g

    @property
    def adapter_dtype(self) -> torch.dtype:
        return self.lora_A[f"s{self.scales[0]}"].dtype

    def _bank(self, name: str) -> Tensor:
        """All scales' experts stacked finest first: (E, ...) with E = Σ n."""
        banks = getattr(self, name)
        parts = [banks[f"s{n}"] for n in self.scales]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _expert_ids(self) -> Tensor:
        """Rows (B, k) of the stacked banks used by each sample (without the core when merged)."""
        if self.ctx is None or (self.mode == "foster" and self.scales[0] == 1):  # one expert for every row
            return self._zero_id
        ids = self.ctx.expert_ids(self.scales, self.offsets)
        return ids if self.merged_interval is None else ids[:, 1:]  # a merged core is in W0

    @property
    def _zero_id(self) -> Tensor:
        return torch.zeros(1, 1, dtype=torch.long, device=self.lora_A[f"s{self.scales[0]}"].device)

    def _check_fold(self, rows: int, batch: int) -> None:
        if rows % batch:
            raise ValueError(
                f"TSM layer {self.tsm_name!r}: leading dim {rows} is not a multiple of the "
                f"{batch} timesteps set in the context; fold extra axes into the batch with the "
                "batch outermost ((b f) / (b h w)) and set one timestep per sample"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (N, ...) → base output plus the experts' low-rank terms, in ``x``'s dtype.

        The general (training) path: every sample gathers its own experts. A merged layer
        replaces it by a state-free path (see :meth:`_select_forward`).
        """
        y = self.base(x) if self.merged_weight is None else self._forward_merged(x)
        ids = self._expert_ids().to(x.device)  # no-op when ctx.set got t on the model's device
        self._check_fold(x.shape[0], ids.shape[0])
        xa = x.to(self.adapter_dtype)
        d = self._lowrank(xa, self._bank("lora_A")[ids], self._bank("lora_B")[ids])
        return y.add_(d.to(y.dtype))  # in place: a Linear/Conv backward never reads its output

    def merge(self, interval: int) -> None:
        """Merge the core expert of ``interval``: ``merged_weight = W0 + ΔW`` (replacing a merged one).

        Computed in float32 from ``W0`` (never written) and rounded once to the weight's dtype, so
        it depends only on ``(W0, expert)``. Inference only: the merged path snapshots the
        experts and the router. Experts are checked for non-finite values on the first merge.
        """
        core = self.scales[0]
        if self.mode == "moe":
            raise RuntimeError("a symmetric-MoE layer has no core expert to merge")
        if not 0 <= interval < core:
            raise ValueError(f"interval {interval} out of range for core scale {core}")
        if self.merged_interval == interval:
            return
        first, previous = self.merged_interval is None, self.merged_interval
        if first:
            self._merge_views = self._first_merge()
        elif self.ctx is not None:
            self.ctx.unpin(core, previous)
        # A switch reads only the tables gathered (detached) at the first merge, with the float32
        # arithmetic of a SwitchPlan's batched switch (tsm.switch): the same bits either way.
        tables = self._merge_views
        in_place = tables.target.dtype == torch.float32
        out = tables.target.unsqueeze(0) if in_place else None
        delta = torch.bmm(tables.b[interval], tables.a[interval], out=out)  # (1, out, K) float32
        delta.add_(tables.w0)
        if not in_place:
            tables.target.copy_(delta.squeeze(0))  # one rounding to the weight's dtype
        if tables.context and (first or tables.context_rows[previous] != tables.context_rows[interval]):
            for target, per_interval in tables.context:  # stage 2, fused path: the context experts
                target.copy_(per_interval[interval])
        if tables.context:
            self.ctx.generation += 1  # outputs kept by the shared-input group are stale
        vars(self)["merged_interval"] = interval  # a plain int: nn.Module.__setattr__'s checks skipped
        if self.ctx is not None:
            self.ctx.pin(core, interval)
        if first:
            self._select_forward()

    @torch.no_grad()
    def _first_merge(self) -> MergeTables:
        """Check the core experts, allocate the merged weight and gather what a switch reads
        (:class:`~tsm_video.tsm.switch.MergeTables`): weights flattened to (out, K),
        ``K = in·prod(kernel)``; ``(α/r)·B_i`` (1, out, r) and ``A_i`` (1, r, K) in float32."""
        core = self.scales[0]
        bank_a, bank_b = self.lora_A[f"s{core}"], self.lora_B[f"s{core}"]
        bad = ~(torch.isfinite(bank_a).flatten(1).all(1) & torch.isfinite(bank_b).flatten(1).all(1))
        if bad.any():
            raise ValueError(
                f"TSM layer {self.tsm_name!r}: expert s{core}_i{int(bad.nonzero()[0])} is not finite"
            )
        w0 = self.base.weight
        self.merged_weight = self._merged_buffer()
        target = self.merged_weight.view(w0.shape[0], -1)  # (out, K)
        b = (bank_b.detach().float() * self.scaling).unsqueeze(1)  # (n, 1, out, r)
        a = bank_a.detach().float().reshape(core, 1, self.rank, -1)  # (n, 1, r, K)
        context = self._context_experts()
        rows = [tuple(self._context_rows(i)) for i in range(core)] if context else []
        return MergeTables(w0.detach().view_as(target), target, b, a, context, rows)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Back to ``W0`` (never written) and the per-sample path; no-op when nothing is merged."""
        if self.merged_interval is None:
            return
        if self.ctx is not None:
            self.ctx.unpin(self.scales[0], self.merged_interval)
        if self.fused_tables_a is not None:
            self.input_group.release(self)
        for name in ("merged_weight", *self._fused_buffers):
            setattr(self, name, None)
        self._merge_views = None
        self.merged_interval = None
        self._select_forward()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> TSMLayer:
        """``.to()`` / ``.half()`` / ``.cuda()``: refused while merged. A switch writes through views
        gathered at the first merge; a moved copy of the merged weight would silently keep the old
        interval's expert after the next switch. A no-op (already on that device and dtype) passes."""
        if self.merged_interval is not None and fn(self.base.weight) is not self.base.weight:
            raise RuntimeError(
                f"TSM layer {self.tsm_name!r} has interval {self.merged_interval} merged; moving or "
                "casting it would leave later expert switches behind. Call "
                "tsm_video.tsm.unmerge_all(model) first, move the model, then merge again"
            )
        return super()._apply(fn, recurse)

    def _context_rows(self, interval: int) -> list[int] | None:
        """Bank rows of the context experts shared by every ``t`` of core ``interval``; None when
        a coarser scale's boundary cuts the interval (scales that do not nest)."""
        n, rows = self.scales[0], []
        for m, offset in zip(self.scales[1:], self.offsets[1:]):
            first, last = interval * m // n, -(-(interval + 1) * m // n) - 1  # over t ∈ [iT/n, (i+1)T/n)
            if first != last:
                return None
            rows.append(offset + first)
        return rows

    def _merged_buffer(self) -> Tensor:
        """Storage for ``W0 + ΔW`` at the first merge (shape and dtype of ``W0``)."""
        return torch.empty_like(self.base.weight)

    def _context_experts(self) -> list[tuple[Tensor, list[Tensor]]]:
        """At the first merge: ``(target, tables)`` pairs, a switch to interval ``i`` copying
        ``tables[i]`` into ``target``; only :class:`TSMLinear`'s fused stage-2 path has them."""
        return []

    def _forward_merged(self, x: Tensor) -> Tensor:
        """The base layer's computation with ``merged_weight``."""
        raise NotImplementedError

    def _select_forward(self) -> None:
        """Bind ``forward`` for the current state: the merged base alone when the merged expert is
        all there is, the precomputed stage-2 path when it exists, else the per-sample path."""
        if self.merged_interval is not None and self.mode == "foster":
            path = self._forward_merged
        elif self.merged_interval is not None and self.fused_tables_a is not None:
            path = self._forward_fused
        else:
            vars(self).pop("forward", None)
            return
        if vars(self).get("forward") != path:
            self.forward = path

    def extra_repr(self) -> str:
        return (
            f"scales={list(self.scales)}, rank={self.rank}, alpha={self.alpha}, mode={self.mode}, "
            f"gate={self.gate_activation}, merged={self.merged_interval}"
        )


class TSMLinear(TSMLayer):
    """TSM experts around an ``nn.Linear``; input (N, ..., in) → (N, ..., out)."""

    def _gate_fc(self, gates: int, dd: dict) -> nn.Module:
        return nn.Linear(self.base.in_features, gates, bias=False, **dd)

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """x (N, ..., in); a (B, k, r, in); b (B, k, out, r) → (N, ..., out).

        The router's ``FC`` rows ride along in the ``A`` matmul: one pass over ``x`` and one input
        gradient for both.
        """
        nb, k, r = a.shape[:3]
        xs = x.reshape(nb, -1, x.shape[-1])  # (B, M, in): a sample's rows are contiguous
        w = a.reshape(nb, k * r, -1)  # (B, k·r, in)
        if self.router is not None:
            w = torch.cat([w, self.router.fc.weight.expand(nb, -1, -1)], dim=1)  # (B, k·r + G, in)
        p = torch.bmm(xs, w.transpose(1, 2))  # (B, M, k·r [+ G])
        h = p[..., : k * r] * self.scaling  # (B, M, k·r)
        if self.router is not None:
            g = self._weights(p[..., k * r :])  # logits (B, M, G) → weights (B, M, k)
            h = (h.view(nb, -1, k, r) * g.unsqueeze(-1)).view(nb, -1, k * r)  # (B, M, k·r)
        d = torch.bmm(h, b.transpose(2, 3).reshape(nb, k * r, -1))  # (B, M, out)
        return d.reshape(*x.shape[:-1], -1)  # (N, ..., out)

    def _forward_merged(self, x: Tensor) -> Tensor:
        return F.linear(x, self.merged_weight, self.base.bias)

    def _fusable(self) -> bool:
        """Stage 2 with nesting scales and the base's dtype: the fused path of :mod:`.fused` applies."""
        return (
            self.mode == "assemble"
            and self.adapter_dtype == self.base.weight.dtype
            and all(self._context_rows(i) is not None for i in range(self.scales[0]))
        )

    def _merged_buffer(self) -> Tensor:
        if not self._fusable():
            return super()._merged_buffer()
        if self.input_group is None:
            SharedInputGroup([self])
        return self.input_group.merged_weight(self)

    def _forward_fused(self, x: Tensor) -> Tensor:
        """Merged stage 2: this layer's output from its :class:`~tsm_video.tsm.fused.SharedInputGroup`."""
        return self.input_group.forward(self, x)

    def _context_experts(self) -> list[tuple[Tensor, list[Tensor]]]:
        """On the fused path: ``A_ctx`` (k·r, in) and ``(α/r)·B_ctxᵀ`` (k·r, out) of every core
        interval, gathered once (adapter-sized), and where a switch copies them: this layer's
        rows of its :class:`~tsm_video.tsm.fused.SharedInputGroup`'s weight, its ``fused_b``."""
        if self.input_group is None or self.input_group.weight is None or not self._fusable():
            return []
        rows = [self._context_rows(i) for i in range(self.scales[0])]
        ids = torch.tensor(rows, device=self.base.weight.device)  # (n, k)
        a, b = self._bank("lora_A")[ids], self._bank("lora_B")[ids]  # (n, k, r, in), (n, k, out, r)
        self.fused_tables_a = a.flatten(1, 2)  # (n, k·r, in)
        self.fused_tables_b = b.permute(0, 1, 3, 2).flatten(1, 2) * self.scaling  # (n, k·r, out)
        a_target, b_target = self.input_group.context_targets(self)
        return [
            (a_target, list(self.fused_tables_a.unbind(0))),
            (b_target, list(self.fused_tables_b.unbind(0))),
        ]


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_CLS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class TSMConv(TSMLayer):
    """TSM experts around ``nn.Conv1d/2d/3d``: ``A`` is a conv with the base's geometry, ``B`` a 1×1.

    Input (N, C, *S) → (N, out, *S'). Router gates come from a conv with the base's geometry.
    """

    _channel_dim = 1

    def __init__(self, base: nn.Conv1d | nn.Conv2d | nn.Conv3d, *args, **kwargs) -> None:
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError(
                f"TSMConv supports groups=1 and padding_mode='zeros' only, got "
                f"groups={base.groups}, padding_mode={base.padding_mode!r}"
            )
        self.dims = len(base.kernel_size)
        super().__init__(base, *args, **kwargs)

    def _forward_merged(self, x: Tensor) -> Tensor:
        return self.base._conv_forward(x, self.merged_weight, self.base.bias)

    def _geometry(self) -> dict:
        return {"stride": self.base.stride, "padding": self.base.padding, "dilation": self.base.dilation}

    def _gate_fc(self, gates: int, dd: dict) -> nn.Module:
        return _CONV_CLS[self.dims](
            self.base.in_channels, gates, self.base.kernel_size, bias=False, **self._geometry(), **dd
        )

    def _lowrank(self, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """x (N, C, *S); a (B, k, r, C, *K); b (B, k, out, r) → (N, out, *S')."""
        nb, k, r = a.shape[:3]
        n, f = x.shape[0], x.shape[0] // nb
        xg = x.reshape(nb, f, *x.shape[1:]).transpose(0, 1).reshape(f, -1, *x.shape[2:])  # f (B C) *S
        h = _CONV_FN[self.dims](
            xg, a.reshape(nb * k * r, *a.shape[3:]), groups=nb, **self._geometry()
        )  # f (B k r) *S'
        out_spatial = h.shape[2:]
        h = h.reshape(f, nb, k, r, -1) * self.scaling  # f B k r (S')
        if self.router is not None:
            g = self._weights(self.router.fc(x))  # (B f) k *S'
            h = h * g.reshape(nb, f, k, 1, -1).transpose(0, 1)  # f B k 1 (S')
        d = torch.einsum("fbkrs,bkor->bfos", h, b)  # B f out (S')
        return d.reshape(n, -1, *out_spatial)  # (B f) out *S'
