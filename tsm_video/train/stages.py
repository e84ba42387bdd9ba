"""The stage plan and each stage's model: what is built, what is loaded, what trains.

Stages (``tsm_video.config.STAGES``), each in its own run folder under ``<output_dir>/<name>/``:

- ``base``     → ``base/``: the whole denoiser trains, from ``model.checkpoint`` when set (the
                 demo's tiny model with its trained VAE), else from a seeded random init;
                 writes ``model.safetensors``, the base of every later stage of the run.
- ``lora``     → ``foster_s1/``: fostering at scale 1, i.e. vanilla LoRA.
- ``foster``   → ``foster_s<n>/`` for each configured scale ``n``: TSM stage 1.
- ``assemble`` → ``assemble/``: TSM stage 2; loads every scale's stage-1 adapter (experts
                 frozen) and trains the routers.

Stage-1 adapters also carry the text LoRA when ``tsm.text_lora.enabled``; stage 2 keeps the
core (finest) scale's text LoRA, frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tsm_video.config import BASE_FILE, ConfigError, RunConfig
from tsm_video.models.backbone import Backbone, FullCheckpoint
from tsm_video.tsm import (
    PRESETS,
    AdapterError,
    TimestepContext,
    configure_stage,
    inject,
    load_adapter,
    read_adapter_metadata,
)

__all__ = [
    "StageRun",
    "plan_stages",
    "build_stage_model",
    "stage1_adapter",
    "check_prerequisites",
    "adapter_metadata",
    "load_trained",
    "text_lora_targets",
    "text_prefixes",
    "ADAPTER_FILE",
]

ADAPTER_FILE = "adapter.safetensors"


@dataclass(frozen=True)
class StageRun:
    """One training run: a stage at a scale, with its folder and length."""

    stage: str  # base | foster | assemble ("lora" is foster at scale 1)
    scales: tuple[int, ...]  # the fostered scale, or every scale in assemble; () for base
    dir: Path
    steps: int
    lr: float

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def output(self) -> Path:
        return self.dir / (BASE_FILE if self.stage == "base" else ADAPTER_FILE)


def stage1_adapter(cfg: RunConfig, scale: int) -> Path:
    """The stage-1 adapter file of ``scale`` (``foster_s<n>/adapter.safetensors``)."""
    return cfg.run_dir / f"foster_s{scale}" / ADAPTER_FILE


def plan_stages(cfg: RunConfig, stage: str | None = None, scale: int | None = None) -> list[StageRun]:
    """The runs ``tsm-video train`` performs: all of ``train.stages``, or one ``--stage [--scale]``."""
    stages = list(cfg.train.stages) if stage is None else [stage]
    if scale is not None and stage not in ("foster", "lora"):
        raise ConfigError(
            f"--scale {scale} applies to --stage foster (or lora = scale 1), not {stage or 'all'}"
        )
    if scale is not None and scale not in cfg.tsm.scales:
        raise ConfigError(f"--scale {scale}: not one of tsm.scales={cfg.tsm.scales}")
    runs = []
    t = cfg.train
    for s in stages:
        if s == "base":
            runs.append(StageRun("base", (), cfg.run_dir / "base", t.steps.base, t.base_lr))
        elif s in ("lora", "foster"):
            scales = [1] if s == "lora" else ([scale] if scale is not None else cfg.tsm.scales)
            runs += [
                StageRun("foster", (n,), cfg.run_dir / f"foster_s{n}", t.steps.foster, t.lr) for n in scales
            ]
        else:
            runs.append(
                StageRun("assemble", tuple(cfg.tsm.scales), cfg.run_dir / "assemble", t.steps.assemble, t.lr)
            )
    return runs


def adapter_metadata(cfg: RunConfig, run: StageRun) -> dict:
    """Metadata written into a stage's adapter file (beside what ``save_adapter`` records)."""
    return {
        "backbone": cfg.model.backbone,
        "targets": cfg.tsm.targets,
        "config_scales": cfg.tsm.scales,
        "text_lora": cfg.tsm.text_lora.targets if cfg.tsm.text_lora.enabled else None,
        "run": cfg.run.name,
        "run_stage": run.name,
        "core_scale": cfg.tsm.core_scale,
    }


def check_prerequisites(cfg: RunConfig, run: StageRun, produced: frozenset[Path] = frozenset()) -> list[str]:
    """Problems that would stop ``run`` (missing or mismatched stage-1 adapters, missing base),
    found from file headers only — before any model is built. Files in ``produced`` (outputs
    of earlier runs of the same command) count as present."""
    problems = []
    base = cfg.base_weights()  # a missing model.checkpoint is reported by config.missing_paths
    own_base = "base" in cfg.train.stages
    if run.stage != "base" and own_base and base not in produced and not base.is_file():
        problems.append(f"base model {base} not found: run `--stage base` first")
    if run.stage != "assemble":
        return problems
    for n in cfg.tsm.scales:
        path = stage1_adapter(cfg, n)
        if path in produced:
            continue
        if not path.is_file():
            problems.append(
                f"stage-1 adapter of scale {n} not found: {path} "
                f"(run `tsm-video train --cfg ... --stage foster --scale {n}` first)"
            )
            continue
        try:
            meta = read_adapter_metadata(path)
        except AdapterError as e:
            problems.append(str(e))
            continue
        want = {
            "backbone": cfg.model.backbone,
            "targets": cfg.tsm.targets,
            "scales": [n],
            "rank": cfg.tsm.rank,
            "alpha": float(cfg.tsm.alpha or cfg.tsm.rank),
            "num_timesteps": cfg.tsm.num_timesteps,
            "text_lora": cfg.tsm.text_lora.targets if cfg.tsm.text_lora.enabled else None,
        }
        bad = [f"{k}={meta.get(k)!r} (this config: {v!r})" for k, v in want.items() if meta.get(k) != v]
        if bad:
            problems.append(f"{path} was trained with another backbone/config: " + ", ".join(bad))
    return problems


def text_lora_targets(model: Backbone, targets: str | Sequence[str]) -> dict[str, list[str]]:
    """Per text encoder, the module names the text LoRA wraps: the backbone's ``text_targets``
    (only modules whose output reaches the conditioning) that match ``targets`` (a preset name
    or name suffixes, ``tsm.text_lora.targets``). Raises :class:`ConfigError` when none match."""
    suffixes = PRESETS[targets] if isinstance(targets, str) else list(targets)
    chosen = {
        encoder: [n for n in names if any(n == s or n.endswith("." + s) for s in suffixes)]
        for encoder, names in model.text_targets.items()
    }
    if not any(chosen.values()):
        raise ConfigError(
            f"config key `tsm.text_lora.targets`: got {targets!r}; it matches none of backbone "
            f"{model.name}'s text-LoRA modules {model.text_targets}"
        )
    return {encoder: names for encoder, names in chosen.items() if names}


def text_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes (``"text_encoder."`` for VC2) of the backbone's text encoders."""
    encoders = {id(m) for m in model.text_encoders.values()}
    return tuple(name + "." for name, m in model.named_modules() if id(m) in encoders)


def build_stage_model(
    cfg: RunConfig, run: StageRun, device: torch.device | str | None = None, load_weights: bool = True
) -> tuple[nn.Module, TimestepContext | None]:
    """Build the backbone, load its base weights, inject and configure TSM for ``run``.

    Returns ``(model, ctx)``; ``model.tsm_ctx`` is ``ctx`` (None for the base stage, which
    trains the whole denoiser and injects nothing). ``device="meta"`` builds shapes only
    (dry run); ``load_weights=False`` skips the base weights and stage-1 adapters (dry run).
    """
    from tsm_video.models import build_backbone

    torch.manual_seed(cfg.run.seed)  # random-init backbones are the same in every run of this config
    # base starts from model.checkpoint (None = seeded random init); later stages from its output
    base = (cfg.model.checkpoint if run.stage == "base" else cfg.base_weights()) if load_weights else None
    model = build_backbone(cfg.model.backbone, checkpoint=base, device=device)
    if model.num_timesteps != cfg.tsm.num_timesteps:
        raise ConfigError(
            f"config key `tsm.num_timesteps`: got {cfg.tsm.num_timesteps}; backbone "
            f"{cfg.model.backbone} has {model.num_timesteps} timesteps"
        )
    if cfg.model.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
    if run.stage == "base":
        if not isinstance(model, FullCheckpoint):
            raise ConfigError(
                f"config key `train.stages`: stage `base` needs a backbone whose full weights round-trip "
                f"through one file; {cfg.model.backbone} has none (train from its released weights)"
            )
        model.requires_grad_(False)
        model.denoiser.requires_grad_(True)
        return model, None

    ctx = TimestepContext(cfg.tsm.num_timesteps)
    mode = "foster" if run.stage == "foster" else ("moe" if cfg.tsm.router == "symmetric" else "assemble")
    inject(
        model.denoiser,
        cfg.tsm.targets,
        ctx=ctx,
        scales=list(run.scales),
        rank=cfg.tsm.rank,
        alpha=float(cfg.tsm.alpha or cfg.tsm.rank),
        mode=mode,
        gate_activation=cfg.tsm.gate_activation,
    )
    text = cfg.tsm.text_lora
    if text.enabled:
        for encoder, names in text_lora_targets(model, text.targets).items():
            inject(
                model.text_encoders[encoder],
                names,
                ctx=None,
                scales=[1],
                rank=text.rank,
                alpha=float(text.alpha or text.rank),
                mode="foster",
            )
    model.tsm_ctx = ctx
    if run.stage == "assemble" and load_weights:
        # Coarsest first: every stage-1 file holds a text LoRA, and the core scale's (loaded
        # last) is the one stage 2 keeps.
        expect = {"backbone": cfg.model.backbone}
        for n in sorted(run.scales):
            load_adapter(model, stage1_adapter(cfg, n), expect=expect)
    configure_stage(model, "assemble" if run.stage == "assemble" else "foster", cfg.tsm.router_input)
    return model, ctx


def load_trained(cfg: RunConfig, run: StageRun, device: torch.device | str | None = None) -> nn.Module:
    """A finished run's model for inference: base weights + the run's output, frozen, eval mode."""
    model, _ = build_stage_model(cfg, run, device)
    if run.stage == "base":
        model.load_checkpoint(run.output)  # the base stage's own output (FullCheckpoint.save_checkpoint)
    else:
        load_adapter(model, run.output, expect={"backbone": cfg.model.backbone})
    model.requires_grad_(False)
    return model.eval()
