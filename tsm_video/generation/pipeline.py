"""One generation run: check every input on a meta-device skeleton, load the backbone, attach
the adapter, generate the pending clips (or one compare grid per prompt), write the files.

All checks that need no weights (prompts, sizes, adapters, the output folder's manifest) run
before the real model is built, so a bad flag costs seconds, not a checkpoint load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tsm_video.config import RunConfig
from tsm_video.models.backbone import Backbone

from .experts import AdapterSpec, attach_adapter, inspect_adapter
from .media import compare_grid
from .prompts import PromptItem
from .runner import OutputOptions, RunSummary, pending, recorded_run, run_prompts, write_clip
from .sampling import generate_clips
from .settings import GenerateSettings, SettingsError, precision_context

__all__ = ["Variant", "parse_compare", "prepare", "load_backbone", "run_generate", "run_compare"]


@dataclass(frozen=True)
class Variant:
    """One model of a run: a label and its adapter (``None`` = the plain backbone)."""

    label: str
    adapter: Path | None


def parse_compare(spec: str) -> list[Variant]:
    """``"base,lora=A.safetensors,tsm=B.safetensors"`` → variants; ``base`` (no ``=``) is the plain model."""
    variants = []
    for entry in (e.strip() for e in spec.split(",")):
        label, sep, path = entry.partition("=")
        label = label.strip()
        if not label or (sep and not path.strip()) or (not sep and label != "base"):
            raise SettingsError(f"--compare entry {entry!r}: use `base` or LABEL=ADAPTER_FILE")
        variants.append(Variant(label, Path(path.strip()) if sep else None))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels) or len(variants) < 2:
        raise SettingsError(f"--compare needs at least two variants with distinct labels, got {labels}")
    return variants


def _skeleton(cfg: RunConfig) -> Backbone:
    from tsm_video.models import build_backbone

    return build_backbone(cfg.model.backbone, device="meta")


def prepare(
    cfg: RunConfig, settings: GenerateSettings, variants: Sequence[Variant]
) -> dict[str, AdapterSpec]:
    """Check sizes against the backbone's registry entry and each adapter against a weightless
    (meta-device) build of it: the adapter is injected and strictly loaded into its own skeleton,
    so a file made for another backbone, config or model size fails here. Returns ``{label: spec}``.
    """
    from tsm_video.models import BACKBONES

    fresh: Backbone | None = _skeleton(cfg)
    num_timesteps = fresh.num_timesteps
    settings.validate(BACKBONES[cfg.model.backbone].pixel_multiple, num_timesteps)
    specs = {}
    for variant in variants:
        if variant.adapter is not None:
            spec = inspect_adapter(variant.adapter, cfg.model.backbone, num_timesteps)
            attach_adapter(fresh if fresh is not None else _skeleton(cfg), spec)  # one skeleton per adapter
            fresh = None
            specs[variant.label] = spec
    return specs


def load_backbone(cfg: RunConfig, device: torch.device | str) -> Backbone:
    """The base model of ``cfg`` for inference: the run's own trained base when ``train.stages``
    has ``base``, else ``model.checkpoint``, else a ``run.seed``-seeded random init (tiny models)."""
    from tsm_video.models import build_backbone

    torch.manual_seed(cfg.run.seed)  # the random init the trainer builds for this config
    model = build_backbone(cfg.model.backbone, checkpoint=cfg.base_weights(), device=device)
    model.requires_grad_(False)
    return model.eval()


def _base_identity(cfg: RunConfig) -> dict:
    weights = cfg.base_weights()
    if weights is None:
        return {"backbone": cfg.model.backbone, "weights": None, "init_seed": cfg.run.seed}
    size = weights.stat().st_size if weights.is_file() else None
    return {"backbone": cfg.model.backbone, "weights": weights.name, "bytes": size}


def _generate_into(
    cfg: RunConfig,
    spec: AdapterSpec | None,
    items: Sequence[PromptItem],
    out_dir: Path,
    settings: GenerateSettings,
    device: torch.device,
    keep_experts: bool = True,
    **run_options,
) -> RunSummary:
    """Load the base, attach ``spec`` (if any), generate the missing clips, restore ``W0``."""
    model = load_backbone(cfg, device)
    switcher = attach_adapter(model, spec, keep_experts) if spec else None

    def clips(prompts, seeds, on_step=None):
        with precision_context(settings.precision, device):
            return generate_clips(
                model, prompts, seeds, settings, switcher, keep_merged=True, on_step=on_step
            )

    try:
        return run_prompts(clips, items, out_dir, steps_per_call=settings.steps, **run_options)
    finally:
        if switcher is not None:
            switcher.close()


def run_generate(
    cfg: RunConfig,
    items: Sequence[PromptItem],
    out_dir: str | Path,
    settings: GenerateSettings,
    *,
    seed: int,
    batch_size: int,
    adapter: Path | None,
    options: OutputOptions,
    device: str | torch.device,
    progress: bool = True,
    keep_experts: bool = True,
) -> RunSummary:
    """Generate ``{id}.mp4`` (+ extras) for every item not already in ``out_dir``."""
    out_dir, device = Path(out_dir), torch.device(device)
    options = _for_modality(cfg, options)
    spec = prepare(cfg, settings, [Variant("model", adapter)]).get("model")
    manifest = {
        "mode": "generate",
        "base": _base_identity(cfg),
        "seed": seed,
        "adapter": spec.describe() if spec else None,
        "settings": settings.to_dict(),
    }
    with recorded_run(out_dir, manifest):
        todo, done = pending(items, out_dir, options.suffix)
        if not todo:
            return RunSummary(skipped=done)
        return _generate_into(
            cfg,
            spec,
            items,
            out_dir,
            settings,
            device,
            seed=seed,
            batch_size=batch_size,
            options=options,
            progress=progress,
            keep_experts=keep_experts,
        )


def run_compare(
    cfg: RunConfig,
    items: Sequence[PromptItem],
    out_dir: str | Path,
    settings: GenerateSettings,
    *,
    seed: int,
    batch_size: int,
    variants: Sequence[Variant],
    options: OutputOptions,
    device: str | torch.device,
    progress: bool = True,
    keep_experts: bool = True,
) -> RunSummary:
    """Same prompts and seeds through every variant → ``{id}.mp4``: one labelled grid per prompt.

    Each variant's clips go to ``out_dir/<label>/{id}.mp4`` (+ the exact frames as ``{id}.npy``)
    first, one model in memory at a time and resumable like a plain run; the grids are then
    composed from the ``.npy`` frames, so they are encoded once.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    options = _for_modality(cfg, options)
    specs = prepare(cfg, settings, variants)
    with recorded_run(
        out_dir,
        {
            "mode": "compare",
            "base": _base_identity(cfg),
            "seed": seed,
            "variants": {v.label: specs[v.label].describe() if v.adapter else None for v in variants},
            "settings": settings.to_dict(),
        },
    ):
        for variant in variants:
            if pending(items, out_dir / variant.label, options.suffix)[0]:
                _generate_into(
                    cfg,
                    specs.get(variant.label),
                    items,
                    out_dir / variant.label,
                    settings,
                    device,
                    seed=seed,
                    batch_size=batch_size,
                    options=replace(options, npy=True),
                    progress=progress,
                    keep_experts=keep_experts,
                )
    todo, done = pending(items, out_dir, options.suffix)
    labels = [v.label for v in variants]
    for item in todo:
        clips = [np.load(out_dir / label / f"{item.id}.npy") for label in labels]
        write_clip(out_dir, item.id, compare_grid(clips, labels), options)
    return RunSummary(written=[it.id for it in todo], skipped=done)


def _for_modality(cfg: RunConfig, options: OutputOptions) -> OutputOptions:
    """Image backbones write ``{id}.png`` (+ ``grid.png``) instead of mp4 clips."""
    from tsm_video.models import BACKBONES

    return replace(options, image=BACKBONES[cfg.model.backbone].modality == "image")
