"""``tsm-video export <what>``: one-time format conversions.

- ``vc2-safetensors``: an official VideoCrafter2 ``model.ckpt`` → one safetensors file with the
  same (full) keys, checked strictly against the architecture first. Loading it afterwards needs
  no ``torch.load`` at all.

Each conversion is a sub-subcommand registered in :func:`register`; heavy imports happen inside
the handlers so ``tsm-video --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register", "export_vc2_safetensors"]


def export_vc2_safetensors(ckpt: str | os.PathLike, out: str | os.PathLike, backbone: str = "vc2") -> int:
    """Convert ``ckpt`` to safetensors at ``out`` (atomic write); returns the number of tensors.

    The checkpoint must match backbone ``backbone`` exactly (missing, unexpected or mis-shaped
    keys raise ``CheckpointError``); absent schedule buffers are written from the schedule so
    the output always holds the full official key set.
    """
    from tsm_video.models import build_backbone
    from tsm_video.models.vc2.checkpoint import CheckpointError, read_state_dict, save_safetensors

    ckpt, out = Path(ckpt), Path(out)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"output {out} must end in .safetensors")
    if out.resolve() == ckpt.resolve():
        raise CheckpointError(f"output {out} would overwrite the input checkpoint")
    state = read_state_dict(ckpt)
    model = build_backbone(backbone, device="meta")  # architecture only: no memory, no init
    model.validate_checkpoint_state(state, str(ckpt))
    state = {**model.schedule.checkpoint_buffers(), **state}
    save_safetensors(state, out, metadata={"format": "pt", "backbone": backbone, "source": ckpt.name})
    return len(state)


def _run_vc2_safetensors(args: argparse.Namespace) -> int:
    from tsm_video.models.vc2.checkpoint import CheckpointError

    try:
        count = export_vc2_safetensors(args.ckpt, args.out, args.backbone)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({count} tensors, {args.out.stat().st_size / 2**30:.2f} GiB)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and its conversions to the ``tsm-video`` parser."""
    parser = subparsers.add_parser("export", help="convert checkpoints and adapters to other formats")
    what = parser.add_subparsers(dest="export_what", metavar="WHAT", required=True)
    vc2 = what.add_parser(
        "vc2-safetensors",
        help="official VideoCrafter2 model.ckpt -> safetensors (strict key check, no pickle afterwards)",
    )
    vc2.add_argument("--ckpt", type=Path, required=True, help="official model.ckpt (read with weights_only)")
    vc2.add_argument("--out", type=Path, required=True, help="output .safetensors path (written atomically)")
    vc2.add_argument("--backbone", default="vc2", help="registry name of the architecture (default: vc2)")
    vc2.set_defaults(func=_run_vc2_safetensors)
