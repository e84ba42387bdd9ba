"""``tsm-video train``."""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["register"]


def _train(args: argparse.Namespace) -> int:
    from tsm_video.config import ConfigError, load_config

    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run")
    cfg = load_config(args.cfg, args.overrides)  # before the trainer's imports: a bad config fails fast

    from tsm_video.train.plan import describe_plan, plan_json
    from tsm_video.train.runner import run_training
    from tsm_video.train.stages import plan_stages

    if args.assemble_intervals:
        from tsm_video.train.intervals import assemble_scale

        if args.stage or args.interval is not None or args.dry_run:
            raise ConfigError("--assemble-intervals takes --cfg, --scale N (optional) and overrides only")
        if args.scale is not None and args.scale not in cfg.tsm.scales:
            raise ConfigError(f"--scale {args.scale}: not one of tsm.scales={cfg.tsm.scales}")
        scales = [args.scale] if args.scale else [n for n in cfg.tsm.scales if n > 1]
        for n in scales:
            print(f"[foster_s{n}] assembled {assemble_scale(cfg, n)}")
        return 0
    runs = plan_stages(cfg, args.stage, args.scale, args.interval)
    if args.dry_run:
        if args.json:
            print(json.dumps(plan_json(cfg, runs)))
            return 0
        processes = int(os.environ.get("WORLD_SIZE", 1))  # set by accelerate launch / torchrun
        print(describe_plan(cfg, runs, processes))
        return 0
    run_training(cfg, args.stage, args.scale, resume=args.resume, interval=args.interval)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="post-pretrain with TSM (stage 1 fostering per scale, stage 2 assembling)",
        description="Run the stages of a run config: `base` (full denoiser, demo only), `foster` for each "
        "of tsm.scales (scale 1 = vanilla LoRA), then `assemble`. Multi-GPU: `accelerate launch "
        "[--config_file configs/accelerate/ddp.yaml] -m tsm_video.cli train --cfg ...`.",
    )
    p.add_argument("--cfg", required=True, help="run config YAML (e.g. configs/vc2_openvid70k.yaml)")
    p.add_argument(
        "--stage",
        choices=["base", "lora", "foster", "assemble"],
        help="run only this stage (lora = foster at scale 1)",
    )
    p.add_argument("--scale", type=int, help="with --stage foster: only this scale")
    p.add_argument(
        "--interval",
        type=int,
        metavar="I",
        help="with --stage foster --scale N (train.foster_schedule=per_expert): only expert I of "
        "scale N, in its own folder foster_s<N>_i<I>/ (one job of a cluster array); the scale's "
        "adapter is assembled when every expert's file is present",
    )
    p.add_argument(
        "--assemble-intervals",
        action="store_true",
        help="assemble the per-expert files of --scale N (default: every scale > 1) into the scale's "
        "stage-1 adapter now; refuses files that disagree (rank, targets, base weights, config)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="PATH",
        help="continue from the latest checkpoint of each run (finished runs are skipped), "
        "or from the checkpoint folder PATH",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (trainable parameters per stage, batch arithmetic, steps, missing "
        "inputs) from a meta-device build; needs no weights or data",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: the plan as one JSON object on stdout ({backbone, runs: [{name, stage, "
        "scales, intervals, steps, global_batch_size, trainable_params, total_params}]})",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides as YAML values, e.g. train.lr=1e-4 tsm.scales=[8,4,2,1]",
    )
    p.set_defaults(func=_train)
