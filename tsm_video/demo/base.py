"""The demo's pretrained base: a committed, reproducible recipe for ``vc2-tiny``'s UNet and text encoder.

The paper post-pretrains a released model (VideoCrafter2, Sec. 4.1); the demo does the same with a
base it ships, so its own minutes go to fostering and assembling (Sec. 3.2-3.3) on a model that
already draws the prompted scene. This recipe makes that base with the real trainer (stage
``base`` of :mod:`tsm_video.train`: full-denoiser ε-MSE on the VC2 schedule) on domain-A synthetic
clips at the demo's size (``data_tools.synth``: 32 × 32, 8 frames), read from a latent cache
(``tsm_video.data.latent_cache``: encoded once by the shipped VAE), with a linear warmup and a
cosine decay of the learning rate. The text encoder is the seeded random init, rounded to fp16
before training so the stored fp16 copy is bit-exactly what the UNet learned to read; it stays
frozen (the trainer's base stage trains the denoiser only), as CLIP stays frozen in VC2.

``python -m tsm_video.demo.base`` regenerates :data:`BASE_WEIGHTS` (UNet fp32 + text encoder fp16,
official ``model.diffusion_model.*`` / ``cond_stage_model.model.*`` keys; the recipe, the final
loss and the wall time in its metadata); :func:`tsm_video.demo.vae.compose_checkpoint` puts it
and the VAE into the checkpoint the demo starts from.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tsm_video.demo.recipe_io import save_recipe_weights
from tsm_video.models.checkpoint_io import read_state_dict, save_safetensors
from tsm_video.train.identity import file_sha256

__all__ = [
    "BASE_WEIGHTS",
    "BASE_PREFIXES",
    "VALIDATION_PROMPTS",
    "BaseRecipe",
    "pretrain_base",
    "fp16_text_init",
]

BASE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "vc2_tiny_base.safetensors"
#: the parts the base file holds (official VC2 key prefixes): UNet, text encoder
BASE_PREFIXES = ("model.diffusion_model.", "cond_stage_model.model.")
_TEXT = "cond_stage_model.model."
_COMMAND = "python -m tsm_video.demo.base"  # recorded in the file; regenerates it


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that determines the shipped base."""

    videos: int = 2048  # domain-A synthetic videos (seed ``seed``); the demo's own data use seeds 0/1
    size: int = 32  # frame side in pixels (the demo's)
    num_frames: int = 8  # frames per clip (the demo's): each clip is a whole video
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    lr_schedule: str = "cosine"
    caption_dropout: float = 0.1  # the demo's: classifier-free guidance needs the empty prompt
    validation_every: int = 500  # clips of VALIDATION_PROMPTS under <workdir>/runs/.../validation
    seed: int = 0
    # phase 2, continued from phase 1 on the same clips: the ε-MSE weighted towards high t
    # (``train.loss_weighting``), where the caption is all the model has to place the shapes. With
    # the plain ε-MSE the base never reads the direction words; with ``v`` it does after ~7000
    # steps (docs/training.md, "x0-space loss weighting"). Cosine cycles with warm restarts, each
    # continuing from the one before: (2000, 2500, 2500) steps.
    weighted_steps: tuple[int, ...] = (2000, 2500, 2500)
    weighted_lr: float = 5e-4
    weighted_warmup_steps: int = 50
    loss_weighting: str = "v"


#: what the base's validation clips show while it trains (one per colour family, fast motions)
VALIDATION_PROMPTS = (
    "one red circle moving fast to the right",
    "two blue squares moving fast up",
    "three yellow triangles moving fast down",
    "one green square moving fast to the left",
)


def fp16_text_init(path: Path, seed: int) -> Path:
    """The demo's seeded random ``vc2-tiny`` with the shipped VAE at ``path``, text encoder
    rounded to fp16 (stored back in fp32, so training reads exactly the fp16 values)."""
    from tsm_video.demo.vae import compose_checkpoint

    compose_checkpoint(path, seed)
    state = read_state_dict(path)
    for key in [k for k in state if k.startswith(_TEXT)]:
        state[key] = state[key].half().float()
    save_safetensors(state, path)
    return path


def _cache(recipe: BaseRecipe, workdir: Path, init: Path) -> Path:
    """Synthetic domain-A videos → a latent + text cache encoded by ``init`` (fp32)."""
    from data_tools.synth import make_synthetic_dataset
    from tsm_video.data import VideoClipDataset, read_index
    from tsm_video.data.latent_cache import write_latent_cache
    from tsm_video.models import build_backbone

    size = (recipe.size, recipe.size)
    csv = make_synthetic_dataset(
        workdir / "data", num_videos=recipe.videos, seed=recipe.seed, size=size, num_frames=recipe.num_frames
    )
    records = read_index(csv, videos=csv.parent / "videos")
    dataset = VideoClipDataset(records, recipe.num_frames, None, None, size, train=False, seed=recipe.seed)
    model = build_backbone("vc2-tiny", checkpoint=str(init)).eval()
    cache = workdir / "cache"
    write_latent_cache(model, dataset, cache, shard_size=1024, dtype=torch.float32, batch_size=32)
    return cache


def _train(prefix: str, overrides: list[str], stats: dict[str, float], print_fn) -> Path:
    """One base-stage run of the demo config → its checkpoint; its mean training loss per interval
    and seconds go into ``stats`` (keys prefixed by ``prefix``)."""
    from tsm_video.config import load_config
    from tsm_video.demo.pipeline import DEMO_CONFIG
    from tsm_video.train.runner import run_training
    from tsm_video.tsm import IntervalSchedule

    cfg = load_config(DEMO_CONFIG, overrides)
    (result,) = run_training(cfg, print_fn=print_fn)
    n, schedule = len(result.interval_loss), IntervalSchedule(cfg.tsm.num_timesteps)
    for i, loss in enumerate(result.interval_loss):
        if loss is not None:
            stats["{}mean_loss_t{}-{}".format(prefix, *schedule.bounds(n, i))] = float(loss)
    stats[f"{prefix}train_seconds"] = result.seconds
    return result.output


def pretrain_base(
    recipe: BaseRecipe, workdir: Path, print_fn=print, phase1: Path | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Run the recipe in ``workdir`` → ``(state, stats)``: the base's UNet (fp32) and text
    encoder (fp16) under official keys, and the training loss per interval (mean over the run;
    ``weighted<i>_…``: phase 2's cycle ``i``) and seconds.

    ``phase1``: a base file this module wrote with the same phase-1 fields (``steps`` … ``seed``)
    whose phase 2 is to be (re)run; its phase 1 is then not trained again.
    """
    from tsm_video.demo.vae import compose_checkpoint

    if phase1 is not None:  # checked before the minutes of caching
        if not recipe.weighted_steps:
            raise ValueError("a phase 1 file is continued by phase 2: weighted_steps must not be empty")
        _check_phase1(phase1, recipe)
    start = time.perf_counter()
    init = fp16_text_init(workdir / "init.safetensors", recipe.seed)
    cache = _cache(recipe, workdir, init)
    print_fn(f"[base] {recipe.videos} videos cached in {time.perf_counter() - start:.0f} s")
    common = [
        f"run.seed={recipe.seed}",
        "data.source=cache",
        f"data.cache_dir={cache}",
        f"data.caption_dropout={recipe.caption_dropout}",
        "train.stages=[base]",
        f"train.lr_schedule={recipe.lr_schedule}",
        f"train.global_batch_size={recipe.batch_size}",
        f"train.per_device_batch_size={recipe.batch_size}",
        "train.checkpoint_every=500",
        "train.log_every=100",
        "train.log_with=none",
        f"train.validation.every={recipe.validation_every}",
        f"train.validation.prompts={json.dumps(list(VALIDATION_PROMPTS))}",
    ]
    stats: dict[str, float] = {}
    if phase1 is None:
        checkpoint = _train(
            "",
            [
                *common,
                f"run.output_dir={workdir / 'runs'}",
                f"model.checkpoint={init}",
                f"train.steps.base={recipe.steps}",
                f"train.base_lr={recipe.lr}",
                f"train.warmup_steps={recipe.warmup_steps}",
            ],
            stats,
            print_fn,
        )
    else:
        checkpoint = compose_checkpoint(workdir / "phase1.safetensors", recipe.seed, base_weights=phase1)
    for cycle, steps in enumerate(recipe.weighted_steps):
        checkpoint = _train(
            f"weighted{cycle}_",
            [
                *common,
                f"run.output_dir={workdir / f'runs_weighted{cycle}'}",
                f"model.checkpoint={checkpoint}",
                f"train.steps.base={steps}",
                f"train.base_lr={recipe.weighted_lr}",
                f"train.warmup_steps={recipe.weighted_warmup_steps}",
                f"train.loss_weighting={recipe.loss_weighting}",
            ],
            stats,
            print_fn,
        )
    trained = read_state_dict(checkpoint)
    state = {k: v for k, v in trained.items() if k.startswith(BASE_PREFIXES)}
    state = {k: v.half() if k.startswith(_TEXT) else v for k, v in state.items()}
    stats["seconds"] = time.perf_counter() - start
    return state, stats


_PHASE1_FIELDS = (
    "videos",
    "size",
    "num_frames",
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "lr_schedule",
    "caption_dropout",
    "seed",
)


def _check_phase1(path: Path, recipe: BaseRecipe) -> None:
    """Refuse (ValueError) a ``--phase1`` file that is unreadable, was not written by this recipe,
    or whose recorded recipe differs from ``recipe`` in a phase-1 field."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("command") != _COMMAND or "recipe" not in meta:
        raise ValueError(f"{path}: not a phase 1 of this recipe: no recipe metadata of `{_COMMAND}`")
    have = json.loads(meta["recipe"])
    bad = [
        f"{k}={have.get(k)!r} (recipe: {getattr(recipe, k)!r})"
        for k in _PHASE1_FIELDS
        if have.get(k) != getattr(recipe, k)
    ]
    if bad:
        raise ValueError(f"{path}: not a phase 1 of this recipe: {', '.join(bad)}")


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped base (``python -m tsm_video.demo.base [--out PATH] [--steps N]``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(BASE_WEIGHTS), help=f"output file (default: {BASE_WEIGHTS})")
    parser.add_argument("--steps", type=int, default=BaseRecipe.steps, help="phase 1 optimizer steps (ε-MSE)")
    parser.add_argument(
        "--weighted-steps",
        type=int,
        nargs="*",
        default=BaseRecipe.weighted_steps,
        help="phase 2: optimizer steps of each cosine cycle of the ε-MSE weighted by `loss_weighting` "
        f"(default {' '.join(map(str, BaseRecipe.weighted_steps))}; none: phase 1 only)",
    )
    parser.add_argument(
        "--phase1",
        type=Path,
        default=None,
        help="a base file this command wrote whose phase-1 settings match the recipe (its phase 1 "
        "alone, or an earlier run to continue): run phase 2 only, from it",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the data, cache and run (logs, validation clips) here; must not exist "
        "(default: a temporary folder, removed)",
    )
    args = parser.parse_args(argv)
    if any(n <= 0 for n in args.weighted_steps):
        parser.error("--weighted-steps: each cycle needs > 0 steps")
    if args.phase1 is not None and not args.weighted_steps:
        parser.error("--phase1 runs phase 2 only: give --weighted-steps")
    recipe = BaseRecipe(steps=args.steps, weighted_steps=tuple(args.weighted_steps))
    if args.workdir is not None and args.workdir.exists():
        parser.error(
            f"--workdir {args.workdir} exists: give a new folder (nothing of another run is touched)"
        )
    if args.phase1 is not None:
        try:
            _check_phase1(args.phase1, recipe)
        except ValueError as err:
            parser.error(f"--phase1: {err}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True)
        state, stats = pretrain_base(recipe, args.workdir, phase1=args.phase1)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            state, stats = pretrain_base(recipe, Path(tmp), phase1=args.phase1)
    threads = str(torch.get_num_threads())
    extra = {} if args.phase1 is None else {"phase1_from": file_sha256(args.phase1)}
    save_recipe_weights(state, args.out, recipe, stats, _COMMAND, torch_threads=threads, **extra)
    print(f"[base] {stats} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
