"""Adapter files (safetensors + metadata): atomic save, strict load, one-interval LoRA export."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from tsm_video.errors import TSMVideoError
from tsm_video.fileio import atomic_write_bytes

from .inject import tsm_layers
from .layers import TSMLayer

__all__ = [
    "AdapterError",
    "FORMAT_VERSION",
    "adapter_state_dict",
    "save_adapter",
    "load_adapter",
    "read_adapter_metadata",
    "read_adapter",
    "write_adapter_file",
    "export_interval_lora",
]

FORMAT_VERSION = 1


class AdapterError(TSMVideoError, ValueError):
    """An adapter file is unreadable or does not fit the model; the message lists every problem."""


def _layer_config(layer: TSMLayer) -> dict:
    return {
        "kind": type(layer).__name__,
        "scales": list(layer.scales),
        "rank": layer.rank,
        "alpha": layer.alpha,
        "mode": layer.mode,
        "gate_activation": layer.gate_activation,
        "router": layer.router is not None,
        "num_timesteps": layer.ctx.num_timesteps if layer.ctx is not None else None,
    }


def _own_params(layer: TSMLayer) -> dict[str, nn.Parameter]:
    """The layer's adapter parameters (experts, then router) by name relative to the layer."""
    prefixes = layer.adapter_param_names + layer.router_param_names
    return {n: p for n, p in layer.named_parameters() if n.split(".")[0] in prefixes}


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every TSM layer's experts and router, keyed ``<module>.lora_A.s8``, ``<module>.router.emb.weight``."""
    return {
        f"{name}.{k}": p.detach() for name, layer in tsm_layers(model) for k, p in _own_params(layer).items()
    }


def save_adapter(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write all TSM parameters of ``model`` to ``path`` atomically (temp file + ``os.replace``).

    Metadata (JSON-encoded strings): ``format_version``, ``layers`` (each layer's scales, rank,
    alpha, mode, gate activation, router, T), top-level ``scales``/``rank``/``alpha``/
    ``num_timesteps``/``gate_activation``/``router``/``stage`` of the most common configuration
    among the timestep-dependent layers (all layers if none is), plus the caller's keys
    (``backbone``, ``targets``, ``stage`` ...).
    """
    layers = tsm_layers(model)
    if not layers:
        raise AdapterError("save_adapter: the model has no TSM layers")
    configs = {name: _layer_config(layer) for name, layer in layers}
    # The summary describes the timestep-dependent (denoiser) layers: a text LoRA (no context)
    # can outnumber them (SD3: 176 CLIP layers vs 96 MM-DiT ones) but never decides the stage.
    timed = [c for c in configs.values() if c["num_timesteps"] is not None] or list(configs.values())
    common = json.loads(Counter(json.dumps(c, sort_keys=True) for c in timed).most_common(1)[0][0])
    stage1 = "lora" if common["scales"] == [1] else "foster"
    stage = {"assemble": "assemble", "moe": "moe"}.get(common["mode"], stage1)
    meta = {
        "format_version": FORMAT_VERSION,
        "layers": configs,
        "stage": stage,
        "router": {"assemble": "asymmetric", "moe": "symmetric"}.get(common["mode"], "none"),
        **{k: common[k] for k in ("scales", "rank", "alpha", "num_timesteps", "gate_activation")},
        **(metadata or {}),
    }
    write_adapter_file(path, adapter_state_dict(model), meta)


def write_adapter_file(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict) -> None:
    """Write ``tensors`` with JSON-encoded ``meta`` to ``path`` atomically (temp file + ``os.replace``).

    ``meta`` must hold what :func:`save_adapter` records (``format_version``, ``layers``, ...) for
    the file to load; callers that build adapter tensors without a model (the per-expert assembly)
    use this directly.
    """
    atomic_write_bytes(path, serialize_safetensors(tensors, {k: json.dumps(v) for k, v in meta.items()}))


_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def serialize_safetensors(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes, deterministic: the same tensors and metadata give the same bytes.

    (The safetensors library orders header entries by a randomly seeded hash map, so its files of
    equal content differ from process to process.) Layout: u64 little-endian header length, the
    JSON header with keys sorted (``__metadata__`` first) padded with spaces to a multiple of 8,
    then the tensors' little-endian bytes in name order.
    """
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise AdapterError(f"tensor {name!r}: dtype {t.dtype} cannot be stored in safetensors")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _read(path: Path, with_tensors: bool) -> tuple[dict, dict[str, Tensor]]:
    if not path.is_file():
        raise AdapterError(f"adapter file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            names = list(f.keys()) if with_tensors else []  # safe_open is not a dict
            tensors = {k: f.get_tensor(k) for k in names}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except Exception as e:  # safetensors raises several types for corrupt headers
        raise AdapterError(
            f"{path} is not a readable safetensors adapter file ({type(e).__name__}: {e})"
        ) from e
    if "format_version" not in meta or "layers" not in meta:
        raise AdapterError(
            f"{path} is a safetensors file but not a tsm-video adapter (no format_version/layers metadata)"
        )
    if meta["format_version"] != FORMAT_VERSION:
        raise AdapterError(
            f"{path}: adapter format {meta['format_version']}, this code reads {FORMAT_VERSION}"
        )
    return meta, tensors


def read_adapter_metadata(path: str | os.PathLike) -> dict:
    """The decoded metadata of an adapter file (no tensors are read)."""
    return _read(Path(path), with_tensors=False)[0]


def read_adapter(path: str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """``(metadata, tensors)`` of an adapter file (checked like :func:`load_adapter`, no model)."""
    return _read(Path(path), with_tensors=True)


def load_adapter(model: nn.Module, path: str | os.PathLike, expect: dict | None = None) -> dict:
    """Load an adapter file strictly into ``model``'s TSM layers and return its metadata.

    A file holding a subset of a layer's scales (a stage-1 file of one scale, no router) loads
    into those scale slots only, so stage 2 loads one stage-1 file per scale. Every TSM layer of
    the model must appear in the file. ``expect`` maps metadata keys to required values (e.g.
    ``{"backbone": "vc2"}``). Any mismatch raises one :class:`AdapterError` listing all problems.
    """
    path = Path(path)
    meta, tensors = _read(path, with_tensors=True)
    problems = [
        f"metadata {k!r}: file has {meta.get(k)!r}, expected {v!r}"
        for k, v in (expect or {}).items()
        if meta.get(k) != v
    ]
    layers = dict(tsm_layers(model))
    targets: dict[str, nn.Parameter] = {}
    for name, cfg in meta["layers"].items():
        cfg = {
            k: cfg.get(k)
            for k in ("kind", "rank", "alpha", "num_timesteps", "mode", "gate_activation", "router")
        } | {"scales": cfg.get("scales") or []}
        layer = layers.get(name)
        if layer is None:
            problems.append(f"unexpected module {name!r}: not a TSM layer of this model")
            continue
        mine = _layer_config(layer)
        problems += [
            f"{name}: {k} is {cfg[k]!r} in the file, {mine[k]!r} in the model"
            for k in ("kind", "rank", "alpha", "num_timesteps")
            if cfg[k] != mine[k]
        ]
        if not set(cfg["scales"]) <= set(mine["scales"]):
            problems.append(f"{name}: file scales {cfg['scales']} not in the model's {mine['scales']}")
        if cfg["router"] and any(cfg[k] != mine[k] for k in ("scales", "mode", "gate_activation")):
            problems.append(
                f"{name}: router of {cfg['scales']} {cfg['mode']}/{cfg['gate_activation']} does "
                f"not fit the model's {mine['scales']} {mine['mode']}/{mine['gate_activation']}"
            )
        if layer.merged_interval is not None:
            problems.append(f"{name}: has a merged expert; unmerge_all(model) before loading")
        own = _own_params(layer)
        wanted = {f"lora_{ab}.s{n}" for ab in "AB" for n in cfg["scales"]}
        wanted |= {k for k in own if k.startswith("router.")} if cfg["router"] else set()
        targets.update({f"{name}.{k}": own[k] for k in wanted if k in own})
    problems += [
        f"missing module {n!r}: TSM layer of the model absent from the file"
        for n in layers
        if n not in meta["layers"]
    ]
    problems += [f"missing tensor {k!r}" for k in sorted(set(targets) - set(tensors))]
    problems += [f"unexpected tensor {k!r}" for k in sorted(set(tensors) - set(targets))]
    problems += [
        f"{k}: shape {tuple(tensors[k].shape)} in the file, {tuple(p.shape)} in the model"
        for k, p in targets.items()
        if k in tensors and tensors[k].shape != p.shape
    ]
    if problems:
        raise AdapterError(f"cannot load adapter {path}:\n  - " + "\n  - ".join(problems))
    with torch.no_grad():
        for k, p in targets.items():
            p.copy_(tensors[k])
    return meta


def export_interval_lora(model: nn.Module, scale: int, interval: int) -> tuple[dict[str, Tensor], dict]:
    """Expert ``s{scale}_i{interval}`` of every layer holding ``scale`` as a peft/diffusers LoRA.

    Returns ``(state_dict, config)``: keys ``<module>.lora_A.weight`` (r, in[, *k]) and
    ``<module>.lora_B.weight`` (out, r[, 1...]); ``config`` is a peft ``LoraConfig``-style dict
    (``r``, ``lora_alpha``, ``target_modules``, ``rank_pattern``/``alpha_pattern`` for outliers).
    Context experts and routers are not part of a plain LoRA and are not exported.
    """
    layers = [(n, layer) for n, layer in tsm_layers(model) if scale in layer.scales]
    if not layers:
        raise ValueError(f"export_interval_lora: no TSM layer has scale {scale}")
    if not 0 <= interval < scale:
        raise ValueError(f"interval {interval} out of range for scale {scale} (valid: 0..{scale - 1})")
    sd: dict[str, Tensor] = {}
    for name, layer in layers:
        a = layer.lora_A[f"s{scale}"][interval].detach()
        b = layer.lora_B[f"s{scale}"][interval].detach()
        sd[f"{name}.lora_A.weight"] = a.clone()
        sd[f"{name}.lora_B.weight"] = b.reshape(*b.shape, *[1] * (a.ndim - 2)).clone()  # (out, r[, 1...])
    # the most common rank/alpha are the defaults; every other layer is named in the patterns
    r = Counter(m.rank for _, m in layers).most_common(1)[0][0]
    alpha = Counter(m.alpha for _, m in layers).most_common(1)[0][0]
    config = {
        "r": r,
        "lora_alpha": alpha,
        "target_modules": [n for n, _ in layers],
        "rank_pattern": {n: m.rank for n, m in layers if m.rank != r},
        "alpha_pattern": {n: m.alpha for n, m in layers if m.alpha != alpha},
    }
    return sd, config
