"""``tsm-video train``."""

from __future__ import annotations

import argparse
import os

__all__ = ["register"]


def _train(args: argparse.Namespace) -> int:
    from tsm_video.config import load_config
    from tsm_video.train.plan import describe_plan
    from tsm_video.train.runner import run_training
    from tsm_video.train.stages import plan_stages

    cfg = load_config(args.cfg, args.overrides)
    if args.dry_run:
        processes = int(os.environ.get("WORLD_SIZE", 1))  # set by accelerate launch / torchrun
        print(describe_plan(cfg, plan_stages(cfg, args.stage, args.scale), processes))
        return 0
    run_training(cfg, args.stage, args.scale, resume=args.resume)
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
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides as YAML values, e.g. train.lr=1e-4 tsm.scales=[8,4,2,1]",
    )
    p.set_defaults(func=_train)
