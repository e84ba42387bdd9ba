"""Loss per timestep interval: the TSM diagnostic, accumulated on device, read at log time only.

``update`` adds per-sample losses into per-interval sums and counts with ``index_add_`` (no
host sync); ``flush`` is the one sync point (called every ``log_every`` steps), reduces
across processes and appends one row per interval to the history, which is saved as JSON
and plotted to PNG at the end of a stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from tsm_video.fileio import atomic_path, atomic_write_text
from tsm_video.tsm import IntervalSchedule

__all__ = ["IntervalLossTracker", "plot_interval_losses"]


class IntervalLossTracker:
    """Mean loss per interval of scale ``n`` over each logging window, plus the running total."""

    def __init__(self, n: int, num_timesteps: int = 1000) -> None:
        self.n = n
        self.schedule = IntervalSchedule(num_timesteps)
        self.history: list[dict] = []  # {"step": s, "loss": [n floats | None]}
        self._sum: Tensor | None = None
        self._count: Tensor | None = None
        self._total_sum = torch.zeros(n, dtype=torch.float64)
        self._total_count = torch.zeros(n, dtype=torch.float64)

    def update(self, t: Tensor, per_sample_loss: Tensor) -> None:
        """Add per-sample losses (B,) at timesteps ``t`` (B,) to their intervals (no host sync)."""
        if self._sum is None:
            self._sum = torch.zeros(self.n, dtype=torch.float32, device=per_sample_loss.device)
            self._count = torch.zeros_like(self._sum)
        idx = self.schedule.interval_index(t.to(per_sample_loss.device), self.n)  # (B,)
        self._sum.index_add_(0, idx, per_sample_loss.detach().float())
        self._count.index_add_(0, idx, torch.ones_like(per_sample_loss, dtype=torch.float32))

    def flush(self, step: int, reduce: Callable[[Tensor], Tensor] = lambda x: x) -> list[float | None]:
        """Sync point: reduce sums/counts (e.g. ``accelerator.reduce``), record and reset the window."""
        if self._sum is None:
            return [None] * self.n
        sums = reduce(self._sum).double().cpu()
        counts = reduce(self._count).double().cpu()
        self._total_sum += sums
        self._total_count += counts
        means = [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]
        self.history.append({"step": step, "loss": means})
        self._sum.zero_()
        self._count.zero_()
        return means

    def totals(self) -> list[float | None]:
        """Mean loss per interval over the whole run so far."""
        return [float(s / c) if c > 0 else None for s, c in zip(self._total_sum, self._total_count)]

    def interval_labels(self) -> list[str]:
        return [f"t∈[{lo},{hi})" for lo, hi in (self.schedule.bounds(self.n, i) for i in range(self.n))]

    def state_dict(self) -> dict:
        """History, totals and the open window (so a resume mid-window loses nothing)."""
        window = torch.zeros(2, self.n) if self._sum is None else torch.stack([self._sum, self._count]).cpu()
        return {
            "history": self.history,
            "total_sum": self._total_sum,
            "total_count": self._total_count,
            "window": window,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self._total_sum = state["total_sum"].clone()
        self._total_count = state["total_count"].clone()
        self._sum, self._count = (w.clone() for w in state["window"].float())

    def as_dict(self, extra: dict | None = None) -> dict:
        """``{scale, intervals, total, history, ...extra}`` (what :meth:`save_json` writes)."""
        return {
            "scale": self.n,
            "intervals": self.interval_labels(),
            "total": self.totals(),
            "history": self.history,
            **(extra or {}),
        }

    def save_json(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write :meth:`as_dict` atomically."""
        return atomic_write_text(path, json.dumps(self.as_dict(extra), indent=1))


def plot_interval_losses(curves: dict[str, dict], path: str | os.PathLike, title: str = "") -> Path:
    """Plot loss-per-interval histories to PNG, one panel per run.

    ``curves``: run label → :meth:`IntervalLossTracker.as_dict` (or the JSON it saved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (label, data) in zip(axes[0], curves.items()):
        steps = [h["step"] for h in data["history"]]
        for i, name in enumerate(data["intervals"]):
            ys = [h["loss"][i] if h["loss"][i] is not None else float("nan") for h in data["history"]]
            ax.plot(steps, ys, marker=".", label=name)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("ε-MSE")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
