"""The per-model timestep context that carries per-sample ``t`` to every TSM layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .schedule import IntervalSchedule

__all__ = ["TimestepContext", "ContextError"]


class ContextError(RuntimeError):
    """A TSM layer needed timesteps but its context was never set."""


class TimestepContext:
    """Holds the current batch's timesteps ``t`` (B,) for all TSM layers of one model.

    The caller sets ``t`` once per forward (``ctx.set(t)``); interval ids per scale are
    computed once and cached. ``t`` stays set until the next ``set``/``clear``, so activation
    checkpointing recomputes with the same ``t``. No globals, hooks or thread-locals.

    Layers with a merged expert :meth:`pin` its ``(scale, interval)``; while any pin is held,
    :meth:`set` refuses timesteps outside it (one check per forward, none in the layers).
    """

    def __init__(self, num_timesteps: int = 1000) -> None:
        self.schedule = IntervalSchedule(num_timesteps)
        self._t: Tensor | None = None
        self._cache: dict[tuple, Tensor | int | None] = {}
        self._pins: dict[tuple[int, int], int] = {}  # (scale, interval) -> layers merged there
        self._host_range: tuple[int | float, int | float] | None = None  # min/max of t, when read
        # counts set/clear and interval switches of fused stage-2 layers: whatever was computed
        # for one t and one set of merged experts is stale after it
        self.generation = 0

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def set(self, t: Tensor, batch_size: int | None = None) -> None:
        """Set the timesteps (B,) long, or float in ``[0, T]``, of the next forward pass.

        A 0-dim ``t`` (one timestep for the whole batch, as stock diffusers pipelines pass it,
        e.g. to a CFG-doubled batch) is expanded to ``(batch_size,)``; it needs ``batch_size``.
        """
        if isinstance(t, Tensor) and t.ndim == 0 and batch_size is not None:
            t = t.expand(batch_size)
        if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() == 0:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"TimestepContext.set expects a non-empty 1-D tensor (B,), got {shape}")
        host_range = None
        if self._pins:  # intervals are monotone in t: those of min(t) and max(t) bound them all
            t_lo, t_hi = host_range = tuple(torch.stack(torch.aminmax(t)).tolist())  # one host sync
            self.schedule.check_range(t_lo, t_hi, t.is_floating_point())
        for n, i in self._pins:
            lo, hi = self.schedule.interval_of(t_lo, n), self.schedule.interval_of(t_hi, n)
            if lo != i or hi != i:
                raise RuntimeError(
                    f"TSM experts of interval {i} of scale {n} are merged, but the timesteps fall in "
                    f"intervals {lo}..{hi} of that scale; merge the right interval (merge_timestep) "
                    "or unmerge first"
                )
        self._t, self._cache, self._host_range = t, {}, host_range
        self.generation += 1

    def pin(self, n: int, i: int, layers: int = 1) -> None:
        """``layers`` more layers have expert ``i`` of scale ``n`` merged (see :meth:`set`)."""
        self._pins[n, i] = self._pins.get((n, i), 0) + layers

    def unpin(self, n: int, i: int, layers: int = 1) -> None:
        """Release ``layers`` :meth:`pin` s of ``(n, i)``."""
        count = self._pins.pop((n, i), 0) - layers
        if count < 0:
            raise RuntimeError(f"TimestepContext.unpin({n}, {i}) without a matching pin")
        if count:
            self._pins[n, i] = count

    def clear(self) -> None:
        self._t, self._cache, self._host_range = None, {}, None
        self.generation += 1

    @property
    def t(self) -> Tensor:
        """The current timesteps (B,); raises :class:`ContextError` when unset."""
        if self._t is None:
            raise ContextError(
                "TSM layer used while its TimestepContext is unset: call ctx.set(t) with the (B,) "
                "timesteps before the forward (model wrappers such as predict_noise do this)"
            )
        return self._t

    def intervals(self, n: int) -> Tensor:
        """Interval ids (B,) long of the current ``t`` at scale ``n`` (cached until the next set)."""
        key = ("interval", n)
        if key not in self._cache:
            self._cache[key] = self.schedule.interval_index(self.t, n)
        return self._cache[key]

    def expert_ids(self, scales: tuple[int, ...], offsets: tuple[int, ...]) -> Tensor:
        """Rows (B, m) into a bank of stacked experts: ``intervals(n_k) + offsets[k]`` per scale."""
        key = ("experts", scales, offsets)
        if key not in self._cache:
            ids = [self.intervals(n) + o for n, o in zip(scales, offsets)]
            self._cache[key] = torch.stack(ids, dim=1)  # (B, m)
        return self._cache[key]

    def timestep_index(self) -> Tensor:
        """Integer timesteps (B,) long in ``[0, T)`` (float ``t`` floored) for embedding tables."""
        key = ("index",)
        if key not in self._cache:
            t = self.t.floor() if self.t.is_floating_point() else self.t
            self._cache[key] = t.long().clamp(0, self.num_timesteps - 1)
        return self._cache[key]

    def single_timestep_index(self) -> int | None:
        """The :meth:`timestep_index` shared by the whole batch as a host integer, or None when
        the batch's timesteps differ. Free after a :meth:`set` with merged experts (which reads
        min/max of ``t`` on the host anyway), else one host sync."""
        key = ("single_index",)
        if key not in self._cache:
            lo, hi = self._host_range or torch.stack(torch.aminmax(self.t)).tolist()
            lo, hi = (min(max(int(math.floor(v)), 0), self.num_timesteps - 1) for v in (lo, hi))
            self._cache[key] = lo if lo == hi else None
        return self._cache[key]

    def single_interval(self, n: int) -> int | None:
        """The one interval at scale ``n`` shared by the whole batch, or None (one host sync)."""
        key = ("single", n)
        if key not in self._cache:
            ids = self.intervals(n)
            lo, hi = int(ids.min()), int(ids.max())
            self._cache[key] = lo if lo == hi else None
        return self._cache[key]

    def __repr__(self) -> str:
        state = "unset" if self._t is None else f"B={self._t.shape[0]}"
        return f"TimestepContext(T={self.num_timesteps}, {state})"
