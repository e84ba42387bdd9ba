"""``per_expert`` fostering: one scale's adapter assembled from its experts' interval files.

Each expert ``i`` of scale ``n`` is trained by its own run ``foster_s<n>_i<i>/`` (a plain LoRA whose
timesteps all lie in interval ``i``; ``tsm_video.train.stages.interval_run``). Once every interval
file of the scale exists, :func:`assemble_scale` stacks the experts into the scale's stage-1 file
``foster_s<n>/adapter.safetensors`` — the same layout and metadata as a ``joint`` run writes, so
stage 2, generation and export read it unchanged. It works on the files alone (no model, no
weights), and refuses files that disagree with each other or with the config: another
backbone, rank, alpha, targets, text LoRA, T, base weights or recipe key.

The model holds one text LoRA; each expert's run trains its own. The assembled file keeps the text
LoRA of the scale's last interval (the noisiest timesteps, where the sampler starts and the
prompt sets the layout); the interval files keep theirs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tsm_video.config import ConfigError, RunConfig
from tsm_video.train.identity import RECIPE_KEYS_ADDED, base_identity, recipe_of
from tsm_video.train.stages import StageRun, adapter_metadata, foster_runs, stage1_adapter
from tsm_video.tsm import AdapterError, read_adapter, write_adapter_file

__all__ = ["interval_runs", "missing_intervals", "assemble_scale", "assemble_ready", "TEXT_LORA_INTERVAL"]

TEXT_LORA_INTERVAL = -1
"""Index (Python-style) of the interval whose text LoRA the assembled scale file keeps: the last."""

_SAME = ("backbone", "targets", "rank", "alpha", "num_timesteps", "text_lora", "base", "recipe")


def interval_runs(cfg: RunConfig, scale: int) -> list[StageRun]:
    """The ``per_expert`` runs of ``scale`` (empty for scale 1 or the ``joint`` schedule)."""
    return [r for r in foster_runs(cfg, scale) if r.interval is not None]


def missing_intervals(cfg: RunConfig, scale: int) -> list[int]:
    """Intervals of ``scale`` whose expert file does not exist yet."""
    return [r.interval for r in interval_runs(cfg, scale) if not r.output.is_file()]


def _disagreements(name: str, meta: dict, want: dict) -> list[str]:
    bad = []
    for key, value in want.items():
        have = meta.get(key)
        if key == "recipe" and isinstance(have, dict):
            have = {**RECIPE_KEYS_ADDED, **have}  # files written before a key existed
            bad += [
                f"{name}: {k}={have.get(k)!r} (expected {v!r})" for k, v in value.items() if have.get(k) != v
            ]
            bad += [f"{name}: unknown recipe key {k!r}" for k in have if k not in value]
        elif have != value:
            bad.append(f"{name}: {key}={have!r} (expected {value!r})")
    return bad


def assemble_scale(cfg: RunConfig, scale: int) -> Path:
    """Stack the interval files of ``scale`` into ``foster_s<n>/adapter.safetensors``; returns its path.

    Deterministic: the same interval files give the same output bytes. Raises
    :class:`tsm_video.config.ConfigError` naming every missing file and every disagreement.
    """
    runs = interval_runs(cfg, scale)
    if not runs:
        raise ConfigError(
            f"scale {scale} has no per-expert interval files to assemble "
            f"(train.foster_schedule={cfg.train.foster_schedule}; scale 1 is a single run)"
        )
    missing = [r for r in runs if not r.output.is_file()]
    if missing:
        raise ConfigError(
            f"cannot assemble scale {scale}: experts {[r.interval for r in missing]} not trained yet "
            f"(missing {', '.join(str(r.output) for r in missing)}; run `tsm-video train --cfg ... "
            f"--stage foster --scale {scale} --interval I`)"
        )
    want = {
        "backbone": cfg.model.backbone,
        "targets": cfg.tsm.targets,
        "rank": cfg.tsm.rank,
        "alpha": float(cfg.tsm.alpha or cfg.tsm.rank),
        "num_timesteps": cfg.tsm.num_timesteps,
        "text_lora": cfg.tsm.text_lora.targets if cfg.tsm.text_lora.enabled else None,
        "base": base_identity(cfg),
        "recipe": recipe_of(cfg),
    }
    files, problems = [], []
    for run in runs:
        try:
            meta, tensors = read_adapter(run.output)
        except AdapterError as e:
            problems.append(str(e))
            continue
        expert = {"stage": "foster_interval", "interval_scale": scale, "interval": run.interval}
        problems += _disagreements(str(run.output), meta, expert | want)
        files.append((meta, tensors))
    if not problems:
        ref_meta, ref_tensors = files[0]
        for run, (meta, tensors) in zip(runs[1:], files[1:]):
            if meta["layers"] != ref_meta["layers"]:
                problems.append(f"{run.output}: its layers differ from {runs[0].output}")
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            if shapes != {k: tuple(v.shape) for k, v in ref_tensors.items()}:
                problems.append(f"{run.output}: its tensors differ in names or shapes from {runs[0].output}")
    if problems:
        raise ConfigError(f"cannot assemble scale {scale}: files disagree:\n  - " + "\n  - ".join(problems))

    ref_meta = files[0][0]
    layers = {}
    tensors: dict = {}
    text_source = files[TEXT_LORA_INTERVAL][1]
    for name, layer in ref_meta["layers"].items():
        if layer["num_timesteps"] is None:  # a text-encoder LoRA (no timestep context): one, kept as is
            layers[name] = layer
            for ab in "AB":
                tensors[f"{name}.lora_{ab}.s1"] = text_source[f"{name}.lora_{ab}.s1"]
            continue
        layers[name] = {**layer, "scales": [scale]}
        for ab in "AB":
            # each file holds its expert as the single row of a scale-1 bank: (1, ...) → (n, ...)
            tensors[f"{name}.lora_{ab}.s{scale}"] = torch.cat([t[f"{name}.lora_{ab}.s1"] for _, t in files])
    out = stage1_adapter(cfg, scale)
    scale_run = StageRun("foster", (scale,), out.parent, cfg.train.steps.foster, cfg.train.lr)
    common = ("format_version", "router", "rank", "alpha", "num_timesteps", "gate_activation")
    meta = {k: ref_meta[k] for k in common}
    meta |= {"layers": layers, "stage": "foster", "scales": [scale], "schedule": "per_expert"}
    meta |= adapter_metadata(cfg, scale_run) | {"base": want["base"], "recipe": want["recipe"]}
    write_adapter_file(out, tensors, meta)
    return out


def assemble_ready(cfg: RunConfig, print_fn=print) -> list[Path]:
    """Assemble every ``per_expert`` scale whose interval files are all present and whose scale file
    is missing or older than one of them; returns the files written."""
    written = []
    for scale in cfg.tsm.scales:
        runs = interval_runs(cfg, scale)
        if not runs or missing_intervals(cfg, scale):
            continue
        out = stage1_adapter(cfg, scale)
        newest = max(r.output.stat().st_mtime_ns for r in runs)
        if out.is_file() and out.stat().st_mtime_ns >= newest:
            continue
        written.append(assemble_scale(cfg, scale))
        print_fn(f"[foster_s{scale}] assembled {len(runs)} experts into {out}")
    return written
