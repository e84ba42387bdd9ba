"""Timestep intervals: which expert of scale ``n`` owns timestep ``t``, and how to draw ``t``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["IntervalSchedule"]


class IntervalSchedule:
    """Splits ``[0, T)`` into ``n`` equal intervals per scale; interval of ``t`` is ``floor(t*n/T)``.

    Integer timesteps must lie in ``[0, T)``. Float timesteps (continuous-time backbones, after
    :meth:`from_unit`) may lie in ``[0, T]``; ``t == T`` belongs to the last interval.

    Ranges are checked on the host, before any device sees the values: a CPU tensor is checked
    where it is used (a clear ``ValueError``); a tensor already on an accelerator is not read
    back (that would cost a host sync per call, and a device-side assert cannot be caught), so
    callers check timesteps with :meth:`check` while they are still on the CPU — the trainer
    draws them on the CPU, the sampler takes them from its Python step grid.
    """

    def __init__(self, num_timesteps: int = 1000) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = num_timesteps

    def _check_scale(self, n: int) -> None:
        if not 1 <= n <= self.num_timesteps:
            raise ValueError(f"scale n={n} must lie in [1, T={self.num_timesteps}]")

    def check(self, t: Tensor) -> None:
        """Raise ``ValueError`` unless ``t`` (a CPU tensor) lies in ``[0, T)`` (integers) or ``[0, T]``
        (floats); accelerator tensors are left alone (see the class docstring), and so are traced
        ones (``torch.compile``: a data-dependent branch would break the graph)."""
        if t.device.type != "cpu" or t.numel() == 0 or torch.compiler.is_compiling():
            return
        self.check_range(t.min().item(), t.max().item(), t.is_floating_point())

    def check_range(self, lo: float, hi: float, floating: bool) -> None:
        """:meth:`check` on the host values ``lo = min(t)``, ``hi = max(t)``."""
        T = self.num_timesteps
        if floating:
            if not (lo >= 0 and hi <= T):  # also catches NaN
                raise ValueError(f"float timesteps must lie in [0, {T}], got values in [{lo}, {hi}]")
        elif lo < 0 or hi >= T:
            raise ValueError(f"integer timesteps must lie in [0, {T}), got values in [{lo}, {hi}]")

    def interval_of(self, t: float, n: int) -> int:
        """:meth:`interval_index` of one host timestep (an ``int`` or a ``float``, checked by the
        caller), with the same arithmetic (floats in double precision)."""
        if isinstance(t, float):
            return min(math.floor(t * n / self.num_timesteps), n - 1)
        return t * n // self.num_timesteps

    def from_unit(self, u: Tensor) -> Tensor:
        """Map continuous time ``u ∈ [0, 1]`` (B,) to float timesteps ``u·T ∈ [0, T]`` (B,)."""
        if u.device.type == "cpu" and u.numel() and not (u.min().item() >= 0 and u.max().item() <= 1):
            raise ValueError("continuous timesteps must lie in [0, 1]")
        return u.double() * self.num_timesteps

    def interval_index(self, t: Tensor, n: int) -> Tensor:
        """Interval ids ``floor(t*n/T)`` (B,) long for timesteps ``t`` (B,) long or float."""
        self._check_scale(n)
        self.check(t)
        T = self.num_timesteps
        if t.is_floating_point():
            return torch.floor(t.double() * n / T).long().clamp_max(n - 1)
        return torch.div(t.long() * n, T, rounding_mode="floor")

    def bounds(self, n: int, i: int) -> tuple[int, int]:
        """Half-open integer range ``[lo, hi)`` of the timesteps in interval ``i`` of scale ``n``."""
        self._check_scale(n)
        if not 0 <= i < n:
            raise ValueError(f"interval {i} out of range for scale {n} (valid: 0..{n - 1})")
        T = self.num_timesteps
        return -(-i * T // n), -(-(i + 1) * T // n)  # ceil(i·T/n), ceil((i+1)·T/n)

    def _uniform_in(self, intervals: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """One integer timestep drawn uniformly inside each interval id (B,) → (B,) long."""
        T = self.num_timesteps
        lo = torch.div(-intervals * T, n, rounding_mode="floor").neg()  # ceil(i·T/n)
        hi = torch.div(-(intervals + 1) * T, n, rounding_mode="floor").neg()
        u = torch.rand(intervals.shape, generator=generator, dtype=torch.float64)
        return (lo + (u * (hi - lo)).long()).clamp_max(hi - 1)

    def uniform_in(self, intervals: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B,) long timesteps uniform over the integers of each interval id (B,) of scale ``n``.

        A batch that shares one interval (scale 1, or the one-interval mode) draws with
        ``torch.randint`` (the same draws as :meth:`sample_uniform` / :meth:`sample_in_interval`);
        mixed intervals draw one float64 uniform per sample (as :meth:`sample_stratified`).
        ``intervals`` on the CPU (the check is a host read).
        """
        self._check_scale(n)
        if intervals.numel() and bool((intervals == intervals[0]).all()):
            lo, hi = self.bounds(n, int(intervals[0]))
            return torch.randint(lo, hi, tuple(intervals.shape), generator=generator)
        if bool(((intervals < 0) | (intervals >= n)).any()):
            raise ValueError(f"interval ids must lie in [0, {n}) for scale {n}")
        return self._uniform_in(intervals, n, generator)

    def stratified_intervals(
        self, batch_size: int, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) long interval ids of scale ``n``: each interval ``B // n`` times, the ``B % n``
        rest to distinct random intervals, positions shuffled (CPU, ``generator``)."""
        self._check_scale(n)
        full = torch.arange(n).repeat(batch_size // n)
        extra = torch.randperm(n, generator=generator)[: batch_size % n]
        return torch.cat([full, extra])[torch.randperm(batch_size, generator=generator)]

    def sample_stratified(
        self, batch_size: int, n: int, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """(B,) long timesteps where every interval of scale ``n`` gets ``B // n`` samples.

        The ``B % n`` remaining samples go to distinct intervals chosen at random; positions
        in the batch are shuffled. Draws on the CPU with ``generator`` (reproducible).
        """
        intervals = self.stratified_intervals(batch_size, n, generator)
        return self._uniform_in(intervals, n, generator).to(device)

    def sample_uniform(
        self, batch_size: int, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """(B,) long timesteps drawn uniformly from ``[0, T)``."""
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator).to(device)

    def sample_in_interval(
        self, batch_size: int, n: int, i: int, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """(B,) long timesteps drawn uniformly from interval ``i`` of scale ``n`` (one-interval mode)."""
        lo, hi = self.bounds(n, i)
        return torch.randint(lo, hi, (batch_size,), generator=generator).to(device)
