"""``tsm-video demo``: the embedded end-to-end demo."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


IMAGE_BACKBONES = ("sd15-tiny", "sd2-tiny", "pixart-alpha-tiny", "sd3-tiny")


def _demo(args: argparse.Namespace) -> int:
    if args.backbone in IMAGE_BACKBONES:
        if args.cfg is not None:
            print(
                "tsm-video demo: --cfg is for the video demo; the image demo uses configs/demo_image.yaml "
                "(override keys with KEY=VALUE)",
                file=sys.stderr,
            )
            return 2
        from tsm_video.image_demo import run_image_demo

        run_image_demo(args.backbone, args.out, overrides=args.overrides)
        return 0
    from tsm_video.demo import run_demo

    run_demo(args.out, config=args.cfg, overrides=args.overrides)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    d = subparsers.add_parser(
        "demo",
        help="the embedded end-to-end demo on CPU: synthetic data → shipped base → LoRA/TSM → clips → report",
        description="Make a synthetic OpenVid-format dataset, post-pretrain the shipped tiny "
        "VC2-architecture base (python -m tsm_video.demo.base) with vanilla LoRA and TSM (stage 1 + 2) "
        "with the real training code, generate clips and write DIR/report.md. A few minutes on 2 CPU cores.",
    )
    d.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    d.add_argument("--cfg", default=None, help="demo config (default: configs/demo.yaml)")
    d.add_argument(
        "--backbone",
        default="vc2-tiny",
        choices=("vc2-tiny", *IMAGE_BACKBONES),
        help="vc2-tiny (the video demo, default) or an image backbone: synthetic coloured-shape "
        "images, base / LoRA / TSM, a sample grid PNG and report.md (tsm_video/image_demo.py)",
    )
    d.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    d.set_defaults(func=_demo)
