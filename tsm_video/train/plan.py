"""``tsm-video train --dry-run [--json]``: the plan of a run, with no weights or data needed.

Builds each stage's model on the ``meta`` device (full size, no memory), counts what trains
(experts per scale × rank, routers, text LoRA, or the whole denoiser), shows the batch
arithmetic and steps, and lists which inputs are missing. ``--json`` prints the same plan as one
JSON object (:func:`plan_json`) for scripts and acceptance checks.
"""

from __future__ import annotations

import json
from collections import defaultdict

from tsm_video.config import RunConfig, config_to_dict, missing_paths
from tsm_video.train.stages import StageRun, build_stage_model, check_prerequisites, text_prefixes

__all__ = ["trainable_counts", "describe_plan", "plan_json"]


_COUNTS: dict[tuple, dict[str, int]] = {}


def trainable_counts(cfg: RunConfig, run: StageRun) -> dict[str, int]:
    """Trainable parameters of ``run`` by group (+ ``frozen``), from a ``meta``-device build (no
    weights). Runs that build the same model (the experts of one scale) are built once."""
    key = (json.dumps(config_to_dict(cfg), sort_keys=True), run.stage, run.scales, run.interval is not None)
    if key not in _COUNTS:
        _COUNTS[key] = _count(cfg, run)
    return dict(_COUNTS[key])


def _count(cfg: RunConfig, run: StageRun) -> dict[str, int]:
    model, _ = build_stage_model(cfg, run, device="meta", load_weights=False)
    counts: dict[str, int] = defaultdict(int)
    text = text_prefixes(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if ".router." in name:
            key = "router"
        elif name.startswith(text):
            key = "text LoRA"
        elif ".lora_" in name:
            key = f"experts s{name.rsplit('.s', 1)[-1]}" if run.interval is None else "expert"
        else:
            key = "denoiser (full)"
        counts[key] += p.numel()
    counts["frozen"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return dict(counts)


def plan_json(cfg: RunConfig, runs: list[StageRun]) -> dict:
    """The plan as ``{"backbone", "runs": [{"name", "stage", "scales", "intervals", "steps",
    "global_batch_size", "trainable_params", "total_params"}]}``.

    ``intervals``: the intervals of the fostered scale whose experts the run trains (``[]`` for
    base and assemble); ``steps`` are optimizer steps of ``global_batch_size`` samples each.
    """
    out = []
    for run in runs:
        counts = trainable_counts(cfg, run)
        frozen = counts.pop("frozen")
        trainable = sum(counts.values())
        out.append(
            {
                "name": run.name,
                "stage": run.stage,
                "scales": list(run.scales),
                "intervals": run.intervals,
                "steps": run.steps,
                "global_batch_size": cfg.train.global_batch_size,
                "trainable_params": trainable,
                "total_params": trainable + frozen,
            }
        )
    return {"backbone": cfg.model.backbone, "runs": out}


def describe_plan(cfg: RunConfig, runs: list[StageRun], num_processes: int) -> str:
    """The dry-run report (plain text)."""
    t = cfg.train
    lines = [
        f"run `{cfg.run.name}` → {cfg.run_dir}",
        f"backbone {cfg.model.backbone} ({cfg.model.checkpoint or 'random init'}), "
        f"{cfg.data.num_frames}×{cfg.data.height}×{cfg.data.width} clips, "
        f"mixed precision {cfg.model.mixed_precision}, gradient checkpointing "
        f"{'on' if cfg.model.gradient_checkpointing else 'off'}",
        f"TSM: scales {cfg.tsm.scales} (core {cfg.tsm.core_scale}), rank {cfg.tsm.rank}, alpha "
        f"{cfg.tsm.alpha or cfg.tsm.rank}, targets {cfg.tsm.targets!r}, router {cfg.tsm.router}, "
        f"gate {cfg.tsm.gate_activation}; stage 1 {cfg.train.foster_schedule}; text LoRA "
        + (
            f"{cfg.tsm.text_lora.targets!r} rank {cfg.tsm.text_lora.rank}"
            if cfg.tsm.text_lora.enabled
            else "off"
        ),
    ]
    lines.append("batch arithmetic: global batch = per-device batch × accumulation × processes")
    for n in sorted({num_processes, 1, 8}):
        try:
            acc = t.gradient_accumulation(n)
            lines.append(
                f"  {n} process{'es' if n > 1 else ''}: {t.global_batch_size} = "
                f"{t.per_device_batch_size} × {acc} × {n}"
                + ("   ← this launch" if n == num_processes else "")
            )
        except ValueError as e:
            lines.append(f"  {n} processes: invalid ({e})")
    lines.append("stages:")
    produced: set = set()
    total = 0
    for run in runs:
        counts = trainable_counts(cfg, run)
        frozen = counts.pop("frozen")
        trainable = sum(counts.values())
        total += run.steps
        what = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        lines.append(
            f"  {run.name:<14} {run.stage:<8} {run.steps:>6} steps × {t.global_batch_size} clips, "
            f"lr {run.lr:g}; trainable {trainable:,} ({what}); frozen {frozen:,}"
        )
        problems = check_prerequisites(cfg, run, frozenset(produced))
        lines += [f"      needs: {p}" for p in problems]
        produced.add(run.output)
        if run.interval is not None and run.interval == run.scales[0] - 1:
            lines.append(
                f"  {f'foster_s{run.scales[0]}':<14} assemble the {run.scales[0]} expert files "
                f"into {run.dir.parent / f'foster_s{run.scales[0]}'} (no training)"
            )
    lines.append(f"total: {total} optimizer steps, {total * t.global_batch_size:,} clips")
    missing = missing_paths(cfg)
    lines.append("inputs: " + ("all present" if not missing else "MISSING (training would stop here):"))
    lines += [f"  - {m}" for m in missing]
    return "\n".join(lines)
