"""Adapters at generation time: check a file before any model loads, attach it, and keep the
core expert of the sampler's current timestep merged into ``W0``.

The adapter's own metadata decides everything (no config needed): every TSM layer recorded in
the file (name, scales, rank, alpha, mode, gate activation) is injected as it was trained, then
the file is loaded strictly. At sampling time :class:`ExpertSwitcher` is the DDIM callback:

- ``lora`` (scale 1): the one expert is merged at the first step and stays merged;
- ``foster`` (scale ``n``): expert ``floor(t·n/T)`` is merged; a switch happens only when ``t``
  crosses an interval boundary, so a step between boundaries costs nothing extra, and switches
  every layer at once (:class:`~tsm_video.tsm.SwitchPlan`: one ``bmm`` and two ``foreach`` calls
  per weight shape the first time an interval is reached; after that one ``foreach`` copy of
  the merged weights kept for it, unless ``keep_experts=False``);
- ``assemble`` (stage 2): the core (finest-scale) expert is merged per interval as in stage 1,
  and the layers add the router-gated context experts of ``t`` in their forward;
- ``moe`` (symmetric ablation): nothing to merge; every expert runs in the forward.

While an expert is merged, the model's timestep context refuses a batch whose timesteps leave
its interval, which guards the one assumption of per-interval merging: every sample of a
sampling batch (CFG rows included) shares the interval of ``t``. Merging writes ``W0 + ΔW`` from
a kept copy of ``W0``, so a clip never depends on the merges of the clips before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from tsm_video.errors import TSMVideoError
from tsm_video.tsm import (
    AdapterError,
    IntervalSchedule,
    SwitchPlan,
    TimestepContext,
    TSMLayer,
    inject,
    load_adapter,
    read_adapter_metadata,
    tsm_layers,
)

__all__ = ["AdapterSpec", "AdapterSpecError", "inspect_adapter", "attach_adapter", "ExpertSwitcher", "STAGES"]

STAGES = ("lora", "foster", "assemble", "moe")
_LAYER_KEYS = ("scales", "rank", "alpha", "mode", "gate_activation", "num_timesteps")


class AdapterSpecError(TSMVideoError, ValueError):
    """An adapter file that cannot be used with this backbone, found before the model loads."""


@dataclass(frozen=True)
class AdapterSpec:
    """What an adapter file holds, read from its header: stage, scales and each layer's config."""

    path: Path
    stage: str
    scales: tuple[int, ...]
    num_timesteps: int
    metadata: dict = field(repr=False)

    def describe(self) -> dict:
        """JSON-able identity for run manifests (content hash, not the path)."""
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"file": self.path.name, "sha256": digest, "stage": self.stage, "scales": list(self.scales)}


def inspect_adapter(path: str | Path, backbone: str, num_timesteps: int) -> AdapterSpec:
    """Read an adapter's metadata (no tensors) and check it fits ``backbone`` and ``T``.

    Raises :class:`AdapterSpecError` for a missing or unreadable file, another backbone, another
    number of diffusion timesteps or an unknown stage.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterSpecError(f"adapter file not found: {path}")
    try:
        meta = read_adapter_metadata(path)
    except AdapterError as err:
        raise AdapterSpecError(str(err)) from err
    if meta.get("backbone") != backbone:
        raise AdapterSpecError(
            f"{path} is an adapter for backbone {meta.get('backbone')!r}, but the "
            f"config's model.backbone is {backbone!r}; use the config the adapter "
            "was trained with"
        )
    if meta.get("num_timesteps") != num_timesteps:
        raise AdapterSpecError(
            f"{path} was trained with T={meta.get('num_timesteps')} diffusion timesteps, "
            f"the sampler uses T={num_timesteps}"
        )
    if meta.get("stage") not in STAGES:
        raise AdapterSpecError(
            f"{path}: unknown adapter stage {meta.get('stage')!r} (known: {', '.join(STAGES)})"
        )
    return AdapterSpec(path, meta["stage"], tuple(meta["scales"]), num_timesteps, meta)


def attach_adapter(model: nn.Module, spec: AdapterSpec, keep_experts: bool = True) -> ExpertSwitcher:
    """Inject the adapter's TSM layers into ``model`` (a registered backbone), load the file
    strictly and return the switcher to pass as the sampler callback (``keep_experts``: see
    :class:`ExpertSwitcher`).

    ``model.tsm_ctx`` becomes the context of the timestep-dependent layers, set by
    ``model.predict`` at every call. Raises :class:`AdapterSpecError` on any mismatch.
    """
    ctx = TimestepContext(spec.num_timesteps)
    groups: dict[tuple, list[str]] = {}
    for name, layer in spec.metadata["layers"].items():
        key = tuple(tuple(v) if isinstance(v, list) else v for v in (layer[k] for k in _LAYER_KEYS))
        groups.setdefault(key, []).append(name)
    try:
        for (scales, rank, alpha, mode, gate, steps), names in groups.items():
            inject(
                model,
                names,
                ctx=None if steps is None else ctx,
                scales=list(scales),
                rank=rank,
                alpha=alpha,
                mode=mode,
                gate_activation=gate,
            )
        load_adapter(model, spec.path, expect={"backbone": spec.metadata["backbone"]})
    except (AdapterError, ValueError) as err:
        backbone = spec.metadata["backbone"]
        raise AdapterSpecError(f"{spec.path} does not fit this {backbone} model: {err}") from err
    model.tsm_ctx = ctx
    return ExpertSwitcher(model, spec.num_timesteps, keep_experts)


class ExpertSwitcher:
    """DDIM callback ``(step_index, t)`` keeping core expert ``floor(t·n/T)`` merged in ``W0``.

    Covers the timestep-dependent TSM layers (those with a context), switched together per core
    scale by a :class:`~tsm_video.tsm.SwitchPlan`; a text-encoder LoRA, used once per prompt
    before sampling, runs un-merged. ``merges`` records ``(step_index, t, n, i)``
    for every switch. Call :meth:`close` to restore ``W0``.

    ``keep_experts``: keep every reached interval's merged weights, so that a switch back to it
    is one copy (``n`` copies of the adapted weights' memory: 1.6 GB for full VC2 at n = 8 in
    fp16); ``False`` recomputes ``W0 + ΔW`` at every switch (the same bits).
    """

    def __init__(self, model: nn.Module, num_timesteps: int, keep_experts: bool = True) -> None:
        self.model = model
        self.layers: dict[int, list[TSMLayer]] = {}
        for _, layer in tsm_layers(model):
            if layer.ctx is not None and layer.mode != "moe":
                self.layers.setdefault(layer.scales[0], []).append(layer)
        self.plans = {n: SwitchPlan(layers, keep=keep_experts) for n, layers in self.layers.items()}
        self.schedule = IntervalSchedule(num_timesteps)
        self.current: dict[int, int] = {}
        self.merges: list[tuple[int, int | float, int, int]] = []

    def __call__(self, step_index: int, t: int | float) -> None:
        """``t``: an integer timestep, or a float one of a continuous-time backbone (SD3's σ·1000)."""
        for n, plan in self.plans.items():
            self.schedule.check_range(t, t, isinstance(t, float))
            interval = self.schedule.interval_of(t, n)  # on the host: no tensor per step
            if self.current.get(n) != interval:
                plan.switch(interval)  # all layers of core scale n in a few batched calls
                self.current[n] = interval
                self.merges.append((step_index, t, n, interval))

    def close(self) -> None:
        """Unmerge every expert (``W0`` restored bit-exactly)."""
        for layers in self.layers.values():
            for layer in layers:
                layer.unmerge()
        for plan in self.plans.values():
            plan.release()  # its stacked tables and scratch
        self.current.clear()
