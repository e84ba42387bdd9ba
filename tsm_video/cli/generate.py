"""``tsm-video generate``: prompts → mp4 clips with VC2 (+ a LoRA / TSM adapter), resumable and sharded."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from tsm_video.config import load_config

    cfg = load_config(args.cfg, args.overrides)  # before torch's import: a bad config fails fast

    import torch

    from tsm_video.generation.pipeline import parse_compare, run_compare, run_generate
    from tsm_video.generation.prompts import parse_shard, prompt_items, read_prompts, select_shard
    from tsm_video.generation.runner import OutputOptions
    from tsm_video.generation.settings import GenerateSettings, SettingsError

    settings = GenerateSettings.from_config(
        cfg.generate,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        steps=args.steps,
        eta=args.eta,
        guidance_scale=args.guidance_scale,
        fps=args.fps,
        save_fps=args.save_fps,
        precision=args.precision,
    )
    items = read_prompts(args.prompts) if args.prompts else prompt_items(args.prompt)
    if args.shard:
        items = select_shard(items, *parse_shard(args.shard))
    batch_size = cfg.generate.batch_size if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise SettingsError(f"--batch-size {batch_size}: must be >= 1")
    common = {
        "seed": cfg.generate.seed if args.seed is None else args.seed,
        "batch_size": batch_size,
        "options": OutputOptions(settings.save_fps, gif=args.gif, grid_png=args.grid_png),
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "progress": not args.no_progress,
        "keep_experts": not args.no_keep_experts,
    }
    if args.compare:
        if args.adapter:
            raise SettingsError("--adapter and --compare exclude each other; name adapters in --compare")
        variants = parse_compare(args.compare)
        summary = run_compare(cfg, items, args.out, settings, variants=variants, **common)
    else:
        adapter = Path(args.adapter) if args.adapter else None
        summary = run_generate(cfg, items, args.out, settings, adapter=adapter, **common)
    written, skipped = len(summary.written), len(summary.skipped)
    print(
        f"tsm-video generate: {written} clip{'' if written == 1 else 's'} written, {skipped} already "
        f"present in {args.out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser(
        "generate",
        help="generate clips from prompts (plain VC2, a LoRA, or TSM experts that follow t)",
        description="Prompts → mp4 clips. Sampling defaults come from the config's `generate` section "
        "(VC2: 320x512, 16 frames, DDIM 50 steps, eta 1.0, CFG 12, fps 28). The same (prompt, seed) "
        "always gives the same clip, whatever the batch or shard. Existing {id}.mp4 files are skipped, "
        "so a killed run resumes where it stopped. An EvalCrafter metadata.json as --prompts writes "
        "0000.mp4 ... 0699.mp4; split the work with --shard i/k.",
    )
    p.add_argument("--cfg", required=True, help="run config YAML (backbone, base weights, generate defaults)")
    p.add_argument(
        "--adapter",
        help="adapter file (.safetensors) from `tsm-video train`: vanilla LoRA, a "
        "stage-1 TSM scale, or stage 2; none = the plain backbone",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeatable); file name = its slug")
    source.add_argument(
        "--prompts",
        help="text file (one prompt per line → 0000.mp4, 0001.mp4, ...) or "
        "EvalCrafter metadata.json (ids → 0000.mp4 ... 0699.mp4)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--compare",
        metavar="SPEC",
        help="side-by-side grids instead of single clips, e.g. "
        "base,lora=lora.safetensors,tsm=assemble.safetensors (labels are yours)",
    )
    p.add_argument("--shard", metavar="I/K", help="generate only shard I of K (0-based) of the prompts")
    p.add_argument(
        "--seed", type=int, help="base seed (default: generate.seed); clip seed = hash(seed, prompt)"
    )
    p.add_argument("--batch-size", type=int, help="prompts per sampler call (default: generate.batch_size)")
    p.add_argument("--height", type=int, help="pixels; a multiple of 64 for VC2")
    p.add_argument("--width", type=int, help="pixels; a multiple of 64 for VC2")
    p.add_argument("--frames", type=int, help="frames per clip")
    p.add_argument("--steps", type=int, help="DDIM steps")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic sampler)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    p.add_argument("--fps", type=int, help="fps the model is conditioned on")
    p.add_argument("--save-fps", type=float, help="frame rate of the written files (default 10, as VC2)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        help="sampler arithmetic (default: generate.precision, fp32 as VC2's own sampler; "
        "bf16/fp16 autocast is faster, its error is multiplied by the guidance scale)",
    )
    p.add_argument("--gif", action="store_true", help="also write {id}.gif")
    p.add_argument("--grid-png", action="store_true", help="also write {id}.png, the frames in a grid")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-keep-experts",
        action="store_true",
        help="recompute W0 + ΔW at every interval switch instead of keeping each reached interval's "
        "merged weights (saves n copies of the adapted layers' weights: 3.2 GB for VC2 in fp32 at "
        "n = 8; the clips are the same)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides as YAML values, e.g. model.checkpoint=/models/vc2/model.ckpt",
    )
    p.set_defaults(func=_run)
