"""``tsm-video export <what>``: one-time format conversions (implemented in :mod:`tsm_video.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _run_vc2_safetensors(args: argparse.Namespace) -> int:
    from tsm_video.export import export_vc2_safetensors

    count = export_vc2_safetensors(args.ckpt, args.out, args.backbone)
    print(f"wrote {args.out} ({count} tensors, {args.out.stat().st_size / 2**30:.2f} GiB)")
    return 0


def _run_lora(args: argparse.Namespace) -> int:
    from tsm_video.export import export_lora

    written = export_lora(args.adapter, args.out, args.scale, args.interval, args.format)
    print(f"wrote {len(written)} files under {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and its conversions to the ``tsm-video`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="convert checkpoints and adapters to other formats",
        description="vc2-safetensors: an official VideoCrafter2 model.ckpt -> one safetensors file. "
        "lora: the experts of a tsm-video adapter -> plain LoRAs (diffusers or peft).",
    )
    what = parser.add_subparsers(dest="export_what", metavar="WHAT", required=True)
    vc2 = what.add_parser(
        "vc2-safetensors",
        help="official VideoCrafter2 model.ckpt -> safetensors (strict key check, no pickle afterwards)",
    )
    vc2.add_argument("--ckpt", type=Path, required=True, help="official model.ckpt (read with weights_only)")
    vc2.add_argument("--out", type=Path, required=True, help="output .safetensors path (written atomically)")
    vc2.add_argument("--backbone", default="vc2", help="registry name of the architecture (default: vc2)")
    vc2.set_defaults(func=_run_vc2_safetensors)
    lora = what.add_parser(
        "lora",
        help="TSM interval experts -> plain LoRAs (diffusers pipe.load_lora_weights for SD1.5/SD2/SD3, "
        "peft adapter folders for PixArt-alpha)",
    )
    lora.add_argument("--adapter", type=Path, required=True, help="a stage-1 or stage-2 adapter.safetensors")
    lora.add_argument("--out", type=Path, required=True, help="output folder (one LoRA per interval)")
    lora.add_argument(
        "--scale", type=int, default=None, help="expert scale (default: the core, finest scale)"
    )
    lora.add_argument("--interval", type=int, default=None, help="one interval (default: every interval)")
    lora.add_argument(
        "--format",
        choices=["diffusers", "peft"],
        default=None,
        help="default: diffusers for sd15/sd2/sd3, peft otherwise",
    )
    lora.set_defaults(func=_run_lora)
