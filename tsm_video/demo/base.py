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


def pretrain_base(
    recipe: BaseRecipe, workdir: Path, print_fn=print
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Run the recipe in ``workdir`` → ``(state, stats)``: the base's UNet (fp32) and text
    encoder (fp16) under official keys, and the training loss per interval (mean over the run) and seconds."""
    from tsm_video.config import load_config
    from tsm_video.demo.pipeline import DEMO_CONFIG
    from tsm_video.train.runner import run_training
    from tsm_video.tsm import IntervalSchedule

    start = time.perf_counter()
    init = fp16_text_init(workdir / "init.safetensors", recipe.seed)
    cache = _cache(recipe, workdir, init)
    print_fn(f"[base] {recipe.videos} videos cached in {time.perf_counter() - start:.0f} s")
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"run.output_dir={workdir / 'runs'}",
            f"run.seed={recipe.seed}",
            f"model.checkpoint={init}",
            "data.source=cache",
            f"data.cache_dir={cache}",
            f"data.caption_dropout={recipe.caption_dropout}",
            "train.stages=[base]",
            f"train.steps.base={recipe.steps}",
            f"train.base_lr={recipe.lr}",
            f"train.warmup_steps={recipe.warmup_steps}",
            f"train.lr_schedule={recipe.lr_schedule}",
            f"train.global_batch_size={recipe.batch_size}",
            f"train.per_device_batch_size={recipe.batch_size}",
            "train.checkpoint_every=500",
            "train.log_every=100",
            "train.log_with=none",
            f"train.validation.every={recipe.validation_every}",
            f"train.validation.prompts={json.dumps(list(VALIDATION_PROMPTS))}",
        ],
    )
    (result,) = run_training(cfg, print_fn=print_fn)
    trained = read_state_dict(result.output)
    state = {k: v for k, v in trained.items() if k.startswith(BASE_PREFIXES)}
    state = {k: v.half() if k.startswith(_TEXT) else v for k, v in state.items()}
    n, schedule = len(result.interval_loss), IntervalSchedule(cfg.tsm.num_timesteps)
    labels = ["t{}-{}".format(*schedule.bounds(n, i)) for i in range(n)]
    stats = {f"mean_loss_{lab}": float(v) for lab, v in zip(labels, result.interval_loss) if v is not None}
    stats["train_seconds"] = result.seconds
    stats["seconds"] = time.perf_counter() - start
    return state, stats


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped base (``python -m tsm_video.demo.base [--out PATH] [--steps N]``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(BASE_WEIGHTS), help=f"output file (default: {BASE_WEIGHTS})")
    parser.add_argument("--steps", type=int, default=BaseRecipe.steps, help="optimizer steps")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the data, cache and run (logs, validation clips) here; must not exist "
        "(default: a temporary folder, removed)",
    )
    args = parser.parse_args(argv)
    recipe = BaseRecipe(steps=args.steps)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True)  # exists: refused, nothing of another run is touched
        state, stats = pretrain_base(recipe, args.workdir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            state, stats = pretrain_base(recipe, Path(tmp))
    threads = str(torch.get_num_threads())
    command = "python -m tsm_video.demo.base"
    save_recipe_weights(state, args.out, recipe, stats, command, torch_threads=threads)
    print(f"[base] {stats} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
