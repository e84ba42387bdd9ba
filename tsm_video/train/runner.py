"""``tsm-video train``: check everything cheap first, then run the planned stages in order."""

from __future__ import annotations

from collections.abc import Callable

from tsm_video.config import ConfigError, RunConfig, missing_paths
from tsm_video.train.checkpoint import list_checkpoints, resolve_resume
from tsm_video.train.intervals import assemble_ready
from tsm_video.train.loop import StageResult, train_stage
from tsm_video.train.stages import StageRun, check_prerequisites, plan_stages

__all__ = ["run_training", "preflight"]


def preflight(cfg: RunConfig, runs: list[StageRun], resume: str | bool | None) -> None:
    """Every error that needs no model: missing inputs, missing/mismatched stage-1 adapters,
    ``--resume PATH`` with several runs or that is no checkpoint folder, a run folder with
    checkpoints but no ``--resume``."""
    problems = [f"missing input — {m}" for m in missing_paths(cfg)]
    produced: set = set()
    for run in runs:
        problems += [f"{run.name}: {p}" for p in check_prerequisites(cfg, run, frozenset(produced))]
        produced.add(run.output)
        if not resume and list_checkpoints(run.dir / "checkpoints"):
            problems.append(
                f"{run.name}: {run.dir / 'checkpoints'} already holds checkpoints; pass --resume "
                f"to continue, or remove the folder to start over"
            )
    if isinstance(resume, str) and resume != "latest" and len(runs) > 1:
        problems.append(
            f"--resume {resume} names one checkpoint but the plan has {len(runs)} runs "
            f"({', '.join(r.name for r in runs)}); add --stage/--scale"
        )
    elif isinstance(resume, str) and resume != "latest" and runs:
        try:
            resolve_resume(resume, runs[0].dir / "checkpoints")
        except FileNotFoundError as err:  # not a checkpoint folder: say so before any model is built
            problems.append(str(err))
    if problems:
        raise ConfigError("cannot start training:\n  - " + "\n  - ".join(problems))


def _finished(run: StageRun) -> bool:
    """Its output exists and its last checkpoint is at (or past) its step count."""
    ckpts = list_checkpoints(run.dir / "checkpoints")
    return run.output.is_file() and bool(ckpts) and int(ckpts[-1].name.split("_")[1]) >= run.steps


def _assemble_ready(cfg: RunConfig, print_fn: Callable[[str], None]) -> None:
    """Assemble complete ``per_expert`` scales (main process; the others wait for the files)."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        assemble_ready(cfg, print_fn)
    state.wait_for_everyone()


def run_training(
    cfg: RunConfig,
    stage: str | None = None,
    scale: int | None = None,
    resume: str | bool | None = None,
    print_fn: Callable[[str], None] = print,
    interval: int | None = None,
) -> list[StageResult]:
    """Run ``train.stages`` (or one ``stage``/``scale``/``interval``); with ``resume``, finished runs
    are skipped and unfinished ones continue from their latest checkpoint. After each ``per_expert``
    run, a scale whose every expert file is present is assembled into its stage-1 adapter."""
    runs = plan_stages(cfg, stage, scale, interval)
    preflight(cfg, runs, resume)
    results = []
    for run in runs:
        if run.stage == "assemble":
            _assemble_ready(cfg, print_fn)
        if resume and _finished(run):
            print_fn(f"[{run.name}] already finished ({run.output}); skipping")
        else:
            results.append(train_stage(cfg, run, resume=resume, print_fn=print_fn))
        if run.interval is not None:
            _assemble_ready(cfg, print_fn)
    return results
