"""``tsm-video eval evalcrafter`` and ``tsm-video eval compare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _metric_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one metric")
    return names


def register(subparsers) -> None:
    """Add the ``eval`` command with its ``evalcrafter`` and ``compare`` subcommands."""
    parser = subparsers.add_parser("eval", help="evaluate generated videos (EvalCrafter metrics)")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)

    run = sub.add_parser(
        "evalcrafter",
        help="score a folder of videos named by prompt id (0000.mp4 ...)",
        description="Layout of --models and the compat/fixed differences: docs/evalcrafter.md",
    )
    run.add_argument("--videos", type=Path, required=True, help="folder of videos named <prompt id>.mp4")
    run.add_argument("--models", type=Path, help="weights folder (required by the full backend)")
    run.add_argument(
        "--metrics",
        type=_metric_list,
        default=None,
        help="comma-separated subset of is,action,amplitude,blip_bleu,color,count "
        "(default: all; light backend: color,count,amplitude)",
    )
    run.add_argument(
        "--mode",
        choices=("compat", "fixed"),
        default="compat",
        help="compat: the official numbers, quirks included; fixed: quirks corrected",
    )
    run.add_argument(
        "--backend",
        choices=("full", "light"),
        default="full",
        help="light: model-free colour/count/amplitude for the synthetic demo domain",
    )
    run.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="custom metadata.json (same format) instead of the packaged official one",
    )
    run.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
    )
    run.add_argument(
        "--fp32",
        action="store_true",
        help="run every model in float32 (default on CUDA: the official precision, "
        "float16 for BLIP-2 and the detection models)",
    )
    run.add_argument(
        "--detection",
        choices=("track", "every-frame"),
        default="track",
        help="count/color: track (official: detect on frame 0 and every 49 frames, DeAOT "
        "in between) or every-frame (detect on every processed frame, no tracker)",
    )
    run.add_argument("--batch-size", type=int, default=8, help="videos per model call (default: 8)")
    run.add_argument(
        "--skip-unknown",
        action="store_true",
        help="count and skip videos whose name is no prompt id (default: error)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--out", type=Path, required=True, help="report JSON (.md, _hist.png and <stem>.cache/ beside it)"
    )
    run.set_defaults(func=_run_evalcrafter)

    cmp = sub.add_parser("compare", help="two report JSONs side by side (Markdown)")
    cmp.add_argument("a", type=Path, help="first report JSON (the reference)")
    cmp.add_argument("b", type=Path, help="second report JSON (differences are b - a)")
    cmp.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    cmp.set_defaults(func=_run_compare)

    syn = sub.add_parser(
        "synth-metadata",
        help="EvalCrafter-format metadata.json for synthetic clips (light backend)",
        description="Turns data_tools.synth's ground_truth.json into prompts + attributes; pass it "
        "to `tsm-video generate --prompts` and `tsm-video eval evalcrafter --backend light "
        "--prompts`.",
    )
    syn.add_argument(
        "--ground-truth", type=Path, required=True, help="ground_truth.json of make_synthetic_dataset"
    )
    syn.add_argument("--out", type=Path, required=True, help="metadata.json to write")
    syn.set_defaults(func=_run_synth_metadata)


def _run_evalcrafter(args: argparse.Namespace) -> int:
    from eval_crafter.report import markdown_table, write_report
    from eval_crafter.runner import DEFAULT_METRICS, EvalSettings, evaluate

    light_default = ("color", "count", "amplitude")
    metrics = args.metrics or (light_default if args.backend == "light" else DEFAULT_METRICS)
    settings = EvalSettings(
        videos=args.videos,
        models=args.models,
        out=args.out,
        metrics=metrics,
        mode=args.mode,
        backend=args.backend,
        device=args.device,
        fp32=args.fp32,
        detection=args.detection,
        batch_size=args.batch_size,
        prompts=args.prompts,
        skip_unknown=args.skip_unknown,
        progress=not args.no_progress,
    )
    report = evaluate(settings)
    paths = write_report(report, args.out)
    sys.stdout.write(markdown_table(report))
    sys.stdout.write("wrote " + ", ".join(str(p) for p in paths.values()) + "\n")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from eval_crafter.report import compare_reports, load_report
    from tsm_video.fileio import atomic_write_text

    text = compare_reports(load_report(args.a), load_report(args.b), (args.a.stem, args.b.stem))
    sys.stdout.write(text)
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


def _run_synth_metadata(args: argparse.Namespace) -> int:
    import json

    from eval_crafter.errors import EvalInputError
    from eval_crafter.synthetic import synthetic_metadata
    from tsm_video.fileio import atomic_write_text

    try:
        ground_truth = json.loads(args.ground_truth.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{args.ground_truth}: not JSON ({err})") from err
    metadata = synthetic_metadata(ground_truth)
    atomic_write_text(args.out, json.dumps(metadata, indent=1))
    sys.stdout.write(f"wrote {len(metadata)} prompts to {args.out}\n")
    return 0
