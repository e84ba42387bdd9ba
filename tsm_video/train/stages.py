"""The stage plan and each stage's model: what is built, what is loaded, what trains.

Stages (``tsm_video.config.STAGES``), each in its own run folder under ``<output_dir>/<name>/``:

- ``base``     → ``base/``: the whole denoiser trains, from ``model.checkpoint`` when set (the
                 demo's tiny model with its trained VAE), else from a seeded random init;
                 writes ``model.safetensors``, the base of every later stage of the run.
- ``lora``     → ``foster_s1/``: fostering at scale 1, i.e. vanilla LoRA.
- ``foster``   → for each configured scale ``n``, TSM stage 1 (``train.foster_schedule``):
                 ``per_expert`` — one run per expert, ``foster_s<n>_i<i>/`` (a scale-1 LoRA trained
                 on interval ``i`` only), assembled into ``foster_s<n>/adapter.safetensors``
                 (``tsm_video.train.intervals``); scale 1 is one run, ``foster_s1/``;
                 ``joint`` — one run ``foster_s<n>/`` training the n experts together.
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
from tsm_video.train.identity import base_identity, recipe_of
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
    "foster_runs",
    "interval_run",
    "build_stage_model",
    "stage1_adapter",
    "stage1_run",
    "compared_runs",
    "check_prerequisites",
    "adapter_metadata",
    "interval_metadata",
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
    interval: int | None = None  # per_expert fostering of scale > 1: the one interval this run trains

    @property
    def intervals(self) -> list[int]:
        """The intervals of ``scales[0]`` whose experts this run trains (fostering; else [])."""
        if self.stage != "foster":
            return []
        return [self.interval] if self.interval is not None else list(range(self.scales[0]))

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def output(self) -> Path:
        return self.dir / (BASE_FILE if self.stage == "base" else ADAPTER_FILE)


def stage1_adapter(cfg: RunConfig, scale: int) -> Path:
    """The stage-1 adapter file of ``scale`` (``foster_s<n>/adapter.safetensors``)."""
    return cfg.run_dir / f"foster_s{scale}" / ADAPTER_FILE


def stage1_run(cfg: RunConfig, scale: int) -> StageRun:
    """Stage 1 of ``scale`` as one model (``load_trained``): ``foster_s<n>/``, whose adapter holds
    every expert of the scale (written by the ``joint`` run, or assembled from ``per_expert`` runs)."""
    t = cfg.train
    return StageRun("foster", (scale,), stage1_adapter(cfg, scale).parent, t.steps.foster, t.lr)


def interval_run(cfg: RunConfig, scale: int, interval: int) -> StageRun:
    """The ``per_expert`` run of expert ``interval`` of ``scale`` (``foster_s<n>_i<i>/``)."""
    t = cfg.train
    return StageRun(
        "foster", (scale,), cfg.run_dir / f"foster_s{scale}_i{interval}", t.steps.foster, t.lr, interval
    )


def foster_runs(cfg: RunConfig, scale: int, interval: int | None = None) -> list[StageRun]:
    """Stage-1 runs of ``scale``: one per expert (``per_expert``, scale > 1), else one run;
    ``interval`` picks one expert's run."""
    t = cfg.train
    if scale == 1 or cfg.train.foster_schedule == "joint":
        return [StageRun("foster", (scale,), cfg.run_dir / f"foster_s{scale}", t.steps.foster, t.lr)]
    chosen = range(scale) if interval is None else [interval]
    return [interval_run(cfg, scale, i) for i in chosen]


def plan_stages(
    cfg: RunConfig, stage: str | None = None, scale: int | None = None, interval: int | None = None
) -> list[StageRun]:
    """The runs ``tsm-video train`` performs: all of ``train.stages``, or one
    ``--stage [--scale [--interval]]``."""
    stages = list(cfg.train.stages) if stage is None else [stage]
    if scale is not None and stage not in ("foster", "lora"):
        raise ConfigError(
            f"--scale {scale} applies to --stage foster (or lora = scale 1), not {stage or 'all'}"
        )
    if scale is not None and scale not in cfg.tsm.scales:
        raise ConfigError(f"--scale {scale}: not one of tsm.scales={cfg.tsm.scales}")
    if interval is not None:
        if scale is None or stage != "foster":
            raise ConfigError(f"--interval {interval} needs --stage foster --scale N")
        if not 0 <= interval < scale:
            raise ConfigError(f"--interval {interval}: scale {scale} has intervals 0..{scale - 1}")
        if cfg.train.foster_schedule != "per_expert" and scale > 1:
            raise ConfigError(
                f"--interval {interval}: one-expert runs belong to train.foster_schedule=per_expert "
                f"(this config: {cfg.train.foster_schedule})"
            )
    runs = []
    t = cfg.train
    for s in stages:
        if s == "base":
            runs.append(StageRun("base", (), cfg.run_dir / "base", t.steps.base, t.base_lr))
        elif s in ("lora", "foster"):
            scales = [1] if s == "lora" else ([scale] if scale is not None else cfg.tsm.scales)
            for n in scales:
                runs += foster_runs(cfg, n, interval)
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
    } | (interval_metadata(cfg, run) if run.interval is not None else {})


def interval_metadata(cfg: RunConfig, run: StageRun) -> dict:
    """What a ``per_expert`` interval file adds: which expert it is, the base weights it was
    trained from and the recipe keys (the assembly refuses files that disagree on them)."""
    return {
        "stage": "foster_interval",
        "interval_scale": run.scales[0],
        "interval": run.interval,
        "base": base_identity(cfg),
        "recipe": recipe_of(cfg),
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
            parts = [r for r in foster_runs(cfg, n) if r.interval is not None]
            missing = [r.interval for r in parts if r.output not in produced and not r.output.is_file()]
            if parts and not missing:
                continue  # every expert's file is there: assembled before stage 2 starts
            problems.append(
                f"stage-1 adapter of scale {n} not found: {path} "
                f"(run `tsm-video train --cfg ... --stage foster --scale {n}` first"
                + (f"; experts {missing} missing, each can run alone with --interval I)" if parts else ")")
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
        scales=[1] if run.interval is not None else list(run.scales),  # one expert: a plain LoRA
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


def compared_runs(cfg: RunConfig) -> dict[str, StageRun]:
    """The runs a method comparison loads (the demos' reports), by label: base (when this config
    trains it; else the base is ``model.checkpoint``), vanilla LoRA, TSM stage 1 (the core scale's
    experts as one model, whichever foster schedule trained them) and TSM stage 2."""
    runs = {r.name: r for r in plan_stages(cfg)}
    core = cfg.tsm.core_scale
    return {
        **({"base": runs["base"]} if "base" in runs else {}),
        "vanilla LoRA (s1)": runs["foster_s1"],
        f"TSM stage 1 (s{core})": stage1_run(cfg, core),
        "TSM stage 2": runs["assemble"],
    }
