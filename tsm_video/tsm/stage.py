"""Model-level switches over injected TSM layers: what trains in each stage, and expert merging."""

from __future__ import annotations

import torch
from torch import nn

from .inject import tsm_layers
from .switch import SwitchPlan

__all__ = [
    "STAGES",
    "configure_stage",
    "trainable_parameters",
    "merge_interval",
    "merge_timestep",
    "unmerge_all",
]

STAGES = ("lora", "foster", "assemble")


ROUTER_INPUTS = {"both": ("fc", "emb"), "x": ("fc",), "t": ("emb",)}


def configure_stage(model: nn.Module, stage: str, router_input: str = "both") -> None:
    """Freeze everything, then unfreeze the stage's parameters.

    ``lora``/``foster``: the experts (``lora_A``/``lora_B``) of every TSM layer.
    ``assemble``: only the routers (layers without a router, e.g. a text LoRA, stay frozen);
    ``router_input="x"`` / ``"t"`` trains only the router's ``FC(x)`` / ``Emb(t)`` term, the
    other staying at its zero init (the router-input ablation, Sec. 4.4).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    if router_input not in ROUTER_INPUTS:
        raise ValueError(f"unknown router input {router_input!r}; valid: {', '.join(ROUTER_INPUTS)}")
    layers = tsm_layers(model)
    if not layers:
        raise ValueError("configure_stage: the model has no TSM layers; call inject first")
    model.requires_grad_(False)
    for _, layer in layers:
        names = layer.router_param_names if stage == "assemble" else layer.adapter_param_names
        for name in names:
            part = getattr(layer, name)
            if part is not None:
                part.requires_grad_(True)
        if stage == "assemble" and layer.router is not None:
            for term in ("fc", "emb"):
                getattr(layer.router, term).requires_grad_(term in ROUTER_INPUTS[router_input])
    if stage == "assemble" and not any(layer.router is not None for _, layer in layers):
        raise ValueError(
            "configure_stage('assemble'): no TSM layer has a router; inject with mode='assemble' or 'moe'"
        )


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs with ``requires_grad``, in module order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def merge_interval(model: nn.Module, interval: int, scale: int | None = None) -> None:
    """Merge core expert ``interval`` into ``W0`` in every TSM layer whose core scale is ``scale``.

    ``scale=None`` requires all layers to share one core scale. Layers stay merged until
    :func:`unmerge_all`, which restores ``W0`` bit-exactly; while merged, their
    :class:`~tsm_video.tsm.TimestepContext` refuses timesteps outside that interval. Symmetric-MoE
    layers have no core expert and are skipped (as in :func:`merge_timestep`). The layers switch
    together through a :class:`~tsm_video.tsm.switch.SwitchPlan` kept on ``model`` (a few batched
    calls per switch; the same bits as ``layer.merge`` on each).
    """
    layers = [layer for _, layer in tsm_layers(model) if layer.mode != "moe"]
    cores = sorted({layer.scales[0] for layer in layers})
    if scale is None:
        if len(cores) != 1:
            raise ValueError(f"merge_interval: layers have core scales {cores}; pass scale=")
        scale = cores[0]
    chosen = [layer for layer in layers if layer.scales[0] == scale]
    if not chosen:
        raise ValueError(f"merge_interval: no TSM layer has core scale {scale} (have {cores})")
    plans = vars(model).setdefault("_tsm_switch_plans", {})
    if scale not in plans or plans[scale].layers != chosen:
        plans[scale] = SwitchPlan(chosen)
    plans[scale].switch(interval)


def merge_timestep(model: nn.Module, t: int | float) -> None:
    """Merge, in every TSM layer, the core expert whose interval contains timestep ``t``.

    Layers already merged at that interval are untouched, so calling this every sampling step
    only re-merges at interval boundaries.
    """
    for _, layer in tsm_layers(model):
        if layer.mode == "moe":
            continue
        core = layer.scales[0]
        at = layer.ctx.schedule.interval_index(torch.tensor([t]), core) if layer.ctx is not None else [0]
        layer.merge(int(at[0]))


def unmerge_all(model: nn.Module) -> None:
    """Restore ``W0`` bit-exactly in every TSM layer (and drop the :func:`merge_interval` plans)."""
    for _, layer in tsm_layers(model):
        layer.unmerge()
    vars(model).pop("_tsm_switch_plans", None)
