"""Export conversions behind ``tsm-video export`` (the command itself is in :mod:`tsm_video.cli.export`).

- ``vc2-safetensors``: an official VideoCrafter2 ``model.ckpt`` → one safetensors file with the
  same (full) keys, checked strictly against the architecture first. Loading it afterwards needs
  no ``torch.load`` at all.
- ``lora``: interval experts of a TSM adapter as plain LoRAs: diffusers format
  (``pipe.load_lora_weights``; SD1.5/SD2/SD3) or peft adapter folders (PixArt-α).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tsm_video.errors import TSMVideoError

__all__ = [
    "export_vc2_safetensors",
    "export_lora",
    "interval_lora",
    "LoraExportError",
    "DIFFUSERS_LORA_FAMILIES",
]


def export_vc2_safetensors(ckpt: str | os.PathLike, out: str | os.PathLike, backbone: str = "vc2") -> int:
    """Convert ``ckpt`` to safetensors at ``out`` (atomic write); returns the number of tensors.

    The checkpoint must match backbone ``backbone`` exactly (missing, unexpected or mis-shaped
    keys raise ``CheckpointError``); absent schedule buffers are written from the schedule so
    the output always holds the full official key set (``Backbone.convert_checkpoint``).
    """
    from tsm_video.models import CheckpointError, FullCheckpoint, build_backbone
    from tsm_video.models.registry import check_weights

    model = build_backbone(backbone, device="meta")  # architecture only: no memory, no init
    if not isinstance(model, FullCheckpoint):
        raise CheckpointError(f"backbone {backbone} has no single-file checkpoint to convert to")
    return model.convert_checkpoint(check_weights(backbone, ckpt), out)


DIFFUSERS_LORA_FAMILIES = ("sd15", "sd2", "sd3")
"""Backbones whose stock pipeline loads a LoRA with ``pipe.load_lora_weights`` (``-tiny`` included);
others (PixArt-α, VC2) get peft adapter folders."""


class LoraExportError(TSMVideoError, ValueError):
    """An adapter that cannot be exported as asked (message names the file and the fix)."""


def interval_lora(adapter: str | os.PathLike, scale: int, interval: int) -> tuple[dict, dict, dict]:
    """Expert ``s{scale}_i{interval}`` of every TSM layer of an adapter file, as plain LoRA.

    Returns ``(state_dict, ranks, meta)``: keys ``<module>.lora_A.weight`` (r, in[, *k]) and
    ``<module>.lora_B.weight`` (out, r[, 1...]) with ``B`` pre-scaled by ``α/r`` (so the LoRA is
    exact at ``lora_alpha = r``, whatever alpha the adapter was trained with); ``ranks`` maps each
    module to its rank; ``meta`` is the adapter's metadata. Layers with the single scale 1 (the
    text LoRA, or a vanilla-LoRA adapter) contribute their one expert; routers and context
    experts are not part of a plain LoRA.
    """
    from safetensors import safe_open

    from tsm_video.tsm import AdapterError, read_adapter_metadata

    adapter = Path(adapter)
    try:
        meta = read_adapter_metadata(adapter)
    except AdapterError as err:
        raise LoraExportError(str(err)) from err
    out: dict = {}
    ranks: dict[str, int] = {}
    with safe_open(str(adapter), framework="pt") as f:
        for name, cfg in meta["layers"].items():
            scales = cfg["scales"]
            if scale in scales:
                n, i = scale, interval
            elif scales == [1]:
                n, i = 1, 0
            else:
                raise LoraExportError(f"{adapter}: layer {name} has scales {scales}, not {scale}")
            if not 0 <= i < n:
                raise LoraExportError(f"interval {i} out of range for scale {n} (valid: 0..{n - 1})")
            a = f.get_slice(f"{name}.lora_A.s{n}")[i].float()
            b = f.get_slice(f"{name}.lora_B.s{n}")[i].float() * (cfg["alpha"] / cfg["rank"])
            out[f"{name}.lora_A.weight"] = a.contiguous()
            out[f"{name}.lora_B.weight"] = b.reshape(*b.shape, *[1] * (a.ndim - 2)).contiguous()
            ranks[name] = int(cfg["rank"])
    return out, ranks, meta


def export_lora(
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    scale: int | None = None,
    interval: int | None = None,
    fmt: str | None = None,
) -> list[Path]:
    """Write interval experts of a TSM adapter file as LoRAs that stock tools load.

    ``scale``: default the adapter's core (finest) scale; ``interval``: one interval, or every
    interval of ``scale`` (the core expert of each interval). ``fmt``: ``diffusers`` (one
    ``s{n}_i{i}.safetensors`` per interval in ``out``, keys ``<component>.<module>.lora_A/B.weight``,
    for ``pipe.load_lora_weights``; SD1.5/SD2/SD3) or ``peft`` (a folder ``s{n}_i{i}/<component>/``
    with ``adapter_model.safetensors`` + ``adapter_config.json`` per model, for
    ``peft.inject_adapter_in_model`` + ``set_peft_model_state_dict``; PixArt-α). Default: by backbone.
    Returns the written paths.
    """
    from safetensors.torch import save_file

    from tsm_video.fileio import atomic_path
    from tsm_video.tsm import read_adapter_metadata

    meta = read_adapter_metadata(adapter) if Path(adapter).is_file() else {}
    if not meta:
        raise LoraExportError(f"adapter file not found: {adapter}")
    backbone = str(meta.get("backbone", ""))
    family = backbone.removesuffix("-tiny")
    fmt = fmt or ("diffusers" if family in DIFFUSERS_LORA_FAMILIES else "peft")
    if fmt == "diffusers" and family not in DIFFUSERS_LORA_FAMILIES:
        raise LoraExportError(
            f"{adapter}: backbone {backbone!r} has no diffusers LoRA loader; use --format peft"
        )
    if fmt not in ("diffusers", "peft"):
        raise LoraExportError(f"unknown LoRA format {fmt!r}; valid: diffusers, peft")
    scale = scale or max(cfg["scales"][0] for cfg in meta["layers"].values())
    intervals = range(scale) if interval is None else [interval]
    out = Path(out)
    written: list[Path] = []
    for i in intervals:
        state, ranks, _ = interval_lora(adapter, scale, i)
        info = {
            "format": "pt",
            "tsm_backbone": backbone,
            "tsm_expert": f"s{scale}_i{i}",
            "tsm_source": Path(adapter).name,
        }
        if fmt == "diffusers":
            path = out / f"s{scale}_i{i}.safetensors"
            with atomic_path(path) as tmp:
                save_file(state, str(tmp), metadata=info)
            written.append(path)
            continue
        for component in sorted({name.split(".", 1)[0] for name in ranks}):
            names = {n.split(".", 1)[1]: r for n, r in ranks.items() if n.startswith(component + ".")}
            folder = out / f"s{scale}_i{i}" / component
            tensors = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(component + ".")}
            with atomic_path(folder / "adapter_model.safetensors") as tmp:
                save_file(tensors, str(tmp), metadata=info)
            r = max(names.values())
            config = {
                "peft_type": "LORA",
                "r": r,
                "lora_alpha": r,
                "target_modules": sorted(names),
                "rank_pattern": {n: k for n, k in names.items() if k != r},
                "alpha_pattern": {n: k for n, k in names.items() if k != r},
                "bias": "none",
            }
            with atomic_path(folder / "adapter_config.json") as tmp:
                tmp.write_text(json.dumps(config, indent=1) + "\n")
            written += [folder / "adapter_model.safetensors", folder / "adapter_config.json"]
    return written
