"""One stage's training loop: accelerate's canonical loop plus TSM timesteps and checkpoints.

Setup (model, optimizer over the stage's trainable set only, data shard, seeded RNG, resume)
then the loop: accumulate → backward → clip → step on ``sync_gradients``; the only host syncs
are at log time. Outputs in the stage's run folder: ``config.yaml``, ``logs/`` (TensorBoard),
``checkpoints/step_<N>/``, ``interval_loss.json``/``.png``, ``validation/step_<N>/*.mp4`` and
the stage's result (``adapter.safetensors``, or ``model.safetensors`` for ``base``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm.auto import tqdm

from tsm_video.config import RunConfig, save_config
from tsm_video.models.backbone import Backbone
from tsm_video.train.checkpoint import (
    RankStates,
    TrainProgress,
    install_trainable_state_hooks,
    resolve_resume,
    save_checkpoint,
)
from tsm_video.train.data import COND_EXTRAS, build_stream, forever
from tsm_video.train.interval_loss import IntervalLossTracker, plot_interval_losses
from tsm_video.train.objective import DiffusionObjective
from tsm_video.train.randomness import TrainRNG, rank_seed, stage_interval_sampler
from tsm_video.train.stages import StageRun, adapter_metadata, build_stage_model, text_prefixes
from tsm_video.train.validation import write_validation_clips
from tsm_video.train.weighting import loss_weights
from tsm_video.tsm import save_adapter, tsm_layers

__all__ = ["StageResult", "has_text_lora", "lr_factor", "train_stage", "trainable_digest"]


@dataclass
class StageResult:
    run: StageRun
    output: Path
    steps: int
    interval_loss: list[float | None]  # mean training loss per interval of the core scale over the run
    seconds: float
    sample_ids: list[str]  # clip ids this rank consumed in this invocation (data audit)
    digest: str  # sha256 of the trainable tensors at the end (equal on every rank)


def has_text_lora(model: Backbone) -> bool:
    """Whether a text LoRA sits in any of ``model``'s text encoders, trained or frozen.

    A cached context (``tsm-video data cache``) was encoded without it, so a model that has one
    must encode its captions live: stage 2 trains its routers on the conditioning the frozen text
    LoRA gives, which is what sampling sees.
    """
    return any(tsm_layers(encoder) for encoder in model.text_encoders.values())


def trainable_digest(model: torch.nn.Module) -> str:
    """sha256 over the trainable tensors' names and bytes (compare ranks, runs, resumes)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def lr_factor(warmup: int, steps: int, schedule: str, step: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based) of a ``steps``-step run:
    linear warmup ``(step + 1) / (warmup + 1)`` over the first ``warmup`` steps, then 1
    (``constant``) or ``cos`` decay from 1 at the end of the warmup to 0 at ``steps`` (``cosine``)."""
    ramp = min(1.0, (step + 1) / (warmup + 1))
    if schedule == "constant" or step < warmup:
        return ramp
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _mixed_precision(cfg: RunConfig) -> str:
    return cfg.model.mixed_precision if torch.cuda.is_available() else "no"


def _describe_trainable(model: torch.nn.Module) -> str:
    groups: dict[str, int] = {}
    text = text_prefixes(model)
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (
                "router"
                if ".router." in name
                else "text LoRA"
                if name.startswith(text)
                else "experts"
                if ".lora_" in name
                else "denoiser"
            )
            groups[key] = groups.get(key, 0) + p.numel()
    return ", ".join(f"{k} {v:,}" for k, v in groups.items())


def train_stage(
    cfg: RunConfig, run: StageRun, resume: str | bool | None = None, print_fn: Callable[[str], None] = print
) -> StageResult:
    """Train one stage run to ``run.steps`` optimizer steps and write its outputs."""
    start = time.perf_counter()
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(cfg),
        log_with=None if cfg.train.log_with == "none" else cfg.train.log_with,
        project_config=ProjectConfiguration(project_dir=str(run.dir), logging_dir=str(run.dir / "logs")),
    )
    accum = cfg.train.gradient_accumulation(accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    say = accelerator.print if print_fn is print else (lambda s: accelerator.is_main_process and print_fn(s))

    # 1. model: base weights, TSM layers, the stage's trainable set
    model, ctx = build_stage_model(cfg, run)
    objective = DiffusionObjective(model, train_text=run.stage == "foster" and cfg.tsm.text_lora.enabled)
    params = [p for p in objective.parameters() if p.requires_grad]
    say(
        f"[{run.name}] trainable: {_describe_trainable(model)} ({sum(p.numel() for p in params):,} params, "
        f"{len(params)} tensors); {run.steps} steps of global batch {cfg.train.global_batch_size} = "
        f"{cfg.train.per_device_batch_size} per device x {accum} accumulation x {accelerator.num_processes} "
        f"processes"
    )

    # 2. optimizer over exactly those parameters; lr: linear warmup, then constant or cosine
    text_ids = {id(p) for enc in model.text_encoders.values() for p in enc.parameters()}
    text_cfg = cfg.tsm.text_lora  # its own lr / weight decay where set (SD3, App. A.1)
    groups = [
        {"params": [p for p in params if id(p) not in text_ids]},
        {
            "params": [p for p in params if id(p) in text_ids],
            "lr": text_cfg.lr or run.lr,
            "weight_decay": cfg.train.weight_decay
            if text_cfg.weight_decay is None
            else text_cfg.weight_decay,
        },
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=run.lr,
        betas=tuple(cfg.train.adam_betas),
        weight_decay=cfg.train.weight_decay,
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, cfg.train.warmup_steps, run.steps, cfg.train.lr_schedule)
    )
    objective, optimizer = accelerator.prepare(objective, optimizer)

    # 3. data shard, the step's randomness, registered state, resume
    dataset, loader = build_stream(cfg, accelerator.process_index, accelerator.num_processes)
    rank = accelerator.process_index
    rng = TrainRNG(rank_seed(cfg.run.seed, rank, run.name))
    weights = loss_weights(model, cfg.train.loss_weighting, cfg.train.loss_weighting_gamma)  # (T,) | None
    if weights is not None:
        weights = weights.to(accelerator.device)
    sampler, t_scale = stage_interval_sampler(cfg, run, accelerator.num_processes, accum)
    progress = TrainProgress()
    tracker = IntervalLossTracker(cfg.tsm.core_scale, cfg.tsm.num_timesteps)
    accelerator.register_for_checkpointing(
        RankStates(accelerator, {"rng": rng, "data": dataset}), progress, tracker, lr_schedule
    )
    install_trainable_state_hooks(accelerator)
    ckpt_root = run.dir / "checkpoints"
    resume_from = resolve_resume(resume, ckpt_root)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        say(f"[{run.name}] resumed from {resume_from} at step {progress.step}")
    if accelerator.is_main_process:
        save_config(cfg, run.dir / "config.yaml")
    accelerator.init_trackers("tsm", config={"stage": run.stage, "scales": str(run.scales), "lr": run.lr})

    # 4. the loop
    device = accelerator.device
    cache = cfg.data.source == "cache"
    uncond = None
    if cache and not has_text_lora(model):  # cached contexts; dropped captions take the cached "" embedding
        from tsm_video.data.latent_cache import read_uncond

        uncond = read_uncond(cfg.data.cache_dir).to(device)
    seen_ids: list[str] = []
    objective.train()
    bar = tqdm(
        total=run.steps,
        initial=progress.step,
        desc=run.name,
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    window_loss = torch.zeros((), device=device)
    window_micro, window_start = 0, time.perf_counter()
    batches = forever(loader)
    micro = 0  # micro-batch within the optimizer step (checkpoints fall on step boundaries)
    while progress.step < run.steps:
        batch = next(batches)
        seen_ids += batch["id"]
        with accelerator.accumulate(objective):
            bsz = len(batch["caption"])
            ids = sampler(progress.step, micro, rank)  # (B,) interval ids at t_scale (full batches)
            t = model.sample_t(ids, t_scale, rng.generator).to(device)
            extras = {key: batch[key].to(device) for key in COND_EXTRAS if key in batch}  # VC2: fps
            inputs = (
                {"latents": batch["latents"].to(device)} if cache else {"pixels": batch["pixels"].to(device)}
            )
            if uncond is not None:
                keep = rng.keep_mask(bsz, cfg.data.caption_dropout).to(device)
                inputs["cond"] = torch.where(
                    keep[:, None, None], batch["context"].to(device), uncond
                )  # B L D
            else:  # text encoded live, through the text LoRA (trained in stage 1, frozen in stage 2)
                inputs["captions"] = rng.drop_captions(batch["caption"], cfg.data.caption_dropout)
            per_sample = objective(t, rng, **inputs, **extras)
            # train.loss_weighting: the mean of w(t) x loss; logs keep the unweighted loss
            loss = per_sample.mean() if weights is None else (weights[t] * per_sample).mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        tracker.update(t, per_sample)
        window_loss += per_sample.detach().mean()
        window_micro += 1
        micro += 1
        if not accelerator.sync_gradients:
            continue
        micro = 0
        lr_schedule.step()
        progress.step += 1
        bar.update(1)
        step = progress.step
        if step % cfg.train.log_every == 0 or step == run.steps:
            # sync point: read the window's losses once
            mean_loss = accelerator.reduce(window_loss, "mean").item() / window_micro
            per_interval = tracker.flush(step, lambda x: accelerator.reduce(x, "sum"))
            rate = window_micro / accum / (time.perf_counter() - window_start)
            scalars = {"loss": mean_loss, "lr": lr_schedule.get_last_lr()[0], "steps_per_s": rate}
            scalars.update({f"loss_interval/{i}": v for i, v in enumerate(per_interval) if v is not None})
            accelerator.log(scalars, step=step)
            bar.set_postfix(loss=f"{mean_loss:.4f}", it_s=f"{rate:.2f}")
            window_loss.zero_()
            window_micro, window_start = 0, time.perf_counter()
        if step % cfg.train.checkpoint_every == 0 or step == run.steps:
            save_checkpoint(accelerator, ckpt_root, step, cfg.train.keep_last)
        every = cfg.train.validation.every
        if every and (step % every == 0 or step == run.steps):
            write_validation_clips(
                cfg,
                accelerator.unwrap_model(objective).model,
                run.dir / "validation" / f"step_{step}",
                accelerator,
            )
    bar.close()

    # 5. outputs
    unwrapped = accelerator.unwrap_model(objective).model
    if accelerator.is_main_process:
        if run.stage == "base":
            unwrapped.save_checkpoint(run.output)  # FullCheckpoint: the builder loads it as `checkpoint`
        else:
            save_adapter(unwrapped, run.output, adapter_metadata(cfg, run))
        extra = {"stage": run.stage, "run_scales": list(run.scales)}
        tracker.save_json(run.dir / "interval_loss.json", extra)
        plot_interval_losses(
            {run.name: tracker.as_dict(extra)},
            run.dir / "interval_loss.png",
            title=f"loss per timestep interval — {run.name}",
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    totals = tracker.totals()
    say(
        f"[{run.name}] done: {run.output}; loss per interval: "
        + ", ".join(
            f"{lab} {v:.4f}" if v is not None else f"{lab} -"
            for lab, v in zip(tracker.interval_labels(), totals)
        )
    )
    if math.isnan(sum(v for v in totals if v is not None)):
        raise FloatingPointError(f"[{run.name}] the loss became NaN")
    digest = trainable_digest(unwrapped)
    return StageResult(run, run.output, progress.step, totals, time.perf_counter() - start, seen_ids, digest)
