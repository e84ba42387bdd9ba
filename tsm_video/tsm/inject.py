"""Wrap a model's layers with TSM layers by module-name patterns (peft-style matching)."""

from __future__ import annotations

import difflib
import re

import torch
from torch import nn

from .context import TimestepContext
from .fused import link_shared_inputs
from .layers import TSMConv, TSMLayer, TSMLinear

__all__ = ["inject", "PRESETS", "tsm_layers", "summary"]

# A list matches dotted names by suffix (``name == p`` or ``name.endswith("." + p)``).
PRESETS: dict[str, list[str]] = {
    "vc2": ["attn1.to_k", "attn1.to_v", "attn2.to_k", "attn2.to_v"],  # spatial + temporal + init_attn
    "vc2-text": ["attn.out_proj"],  # OpenCLIP text tower; needs an attention forward that calls it
    "sd": ["to_q", "to_k", "to_v", "to_out.0"],
    "clip-text": ["q_proj", "v_proj"],  # SD1.5 / SD2 CLIP text encoder (App. A.1)
    "clip-text-qkvo": ["q_proj", "k_proj", "v_proj", "out_proj"],  # SD3's two CLIP encoders (App. A.1)
    "t5-text": ["q", "v"],  # PixArt-α's T5 self-attention (App. A.1)
}

# One table: supported base type → TSM wrapper (first isinstance match wins).
_WRAPPERS: list[tuple[type, type[TSMLayer]]] = [
    (nn.Linear, TSMLinear),
    (nn.Conv1d, TSMConv),
    (nn.Conv2d, TSMConv),
    (nn.Conv3d, TSMConv),
]


def _matcher(targets: str | list[str]):
    """Preset name → its suffix list; list → suffix match; other string → full regex match."""
    if isinstance(targets, str) and targets in PRESETS:
        targets = PRESETS[targets]
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return lambda name: pattern.fullmatch(name) is not None
    suffixes = list(targets)
    return lambda name: any(name == s or name.endswith("." + s) for s in suffixes)


def tsm_layers(model: nn.Module) -> list[tuple[str, TSMLayer]]:
    """All TSM layers of ``model`` as (dotted name, layer), in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, TSMLayer)]


def inject(
    model: nn.Module,
    targets: str | list[str],
    ctx: TimestepContext | None,
    scales: list[int],
    rank: int = 4,
    alpha: float = 4.0,
    mode: str = "foster",
    gate_activation: str = "none",
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Replace every matching ``nn.Linear``/``nn.ConvNd`` of ``model`` by a TSM layer in place.

    ``targets``: a preset name (see ``PRESETS``), a list of dotted-name suffixes, or a regex that
    must match the full dotted name. All wrapped layers share ``ctx``. Load the backbone's
    checkpoint before injecting (the base weights move to ``<name>.base.weight``).
    Returns the wrapped module names; raises when nothing matches or a match cannot be wrapped.
    Stage-2 siblings that read one input (``to_k``/``to_v``) are linked for the fused merged path
    (:func:`tsm_video.tsm.fused.link_shared_inputs`).
    """
    match = _matcher(targets)
    modules = dict(model.named_modules())
    names = [n for n in modules if n and match(n)]
    if not names:
        kinds = tuple(b for b, _ in _WRAPPERS)
        leaves = [n for n, m in modules.items() if isinstance(m, kinds)]
        close = sorted(
            {
                n
                for t in ([targets] if isinstance(targets, str) else targets)
                for n in difflib.get_close_matches(str(t), leaves, n=5, cutoff=0.3)
            }
        )
        raise ValueError(
            f"inject: targets {targets!r} matched no module; close names: {close or leaves[:10]}"
        )
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent, module = modules[parent_name], modules[name]
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(
                f"inject: {name!r} lives inside nn.MultiheadAttention, whose forward never "
                "calls it; use a text encoder whose attention forward calls out_proj"
            )
        if type(module).__module__.startswith("peft."):
            raise ValueError(
                f"inject: {name!r} is a peft {type(module).__name__} layer; TSM layers cannot "
                "wrap peft adapters (unload them first, or fuse them into the base weights)"
            )
        wrapper = next((w for base, w in _WRAPPERS if isinstance(module, base)), None)
        if wrapper is None or isinstance(module, TSMLayer):
            kinds = ", ".join(b.__name__ for b, _ in _WRAPPERS)
            raise ValueError(f"inject: {name!r} is a {type(module).__name__}; supported: {kinds}")
        layer = wrapper(module, ctx, scales, rank, alpha, mode, gate_activation, dtype)
        layer.tsm_name = name
        setattr(parent, attr, layer)
    link_shared_inputs(dict(model.named_modules()), names)  # stage 2: to_k/to_v share one fused matmul
    return names


def summary(model: nn.Module) -> str:
    """One line per distinct layer configuration: count, experts' and routers' parameter totals."""
    groups: dict[str, list[int]] = {}
    for _, layer in tsm_layers(model):
        g = groups.setdefault(f"{type(layer).__name__}({layer.extra_repr()})", [0, 0, 0])
        g[0] += 1
        g[1] += sum(p.numel() for p in (*layer.lora_A.values(), *layer.lora_B.values()))
        g[2] += sum(p.numel() for p in layer.router.parameters()) if layer.router is not None else 0
    return (
        "\n".join(f"{c} × {k}: {e:,} expert params, {r:,} router params" for k, (c, e, r) in groups.items())
        or "no TSM layers"
    )
