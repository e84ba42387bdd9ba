"""`tsm-video data {subset,probe,synth,cache}`: dataset tools on the command line."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

__all__ = ["register"]

#: ``data_tools.synth.DOMAINS``' names, spelled out so ``--help`` needs no numpy (a test keeps them equal).
SYNTH_DOMAINS = ("a", "b", "shifted")


def _positive(kind: type) -> Callable[[str], int | float]:
    """argparse type: a number of ``kind`` that is > 0 (an argparse error, exit 2, otherwise)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _bound(text: str) -> tuple[str, float]:
    """argparse type: ``"aesthetic score=4.5"`` → ``("aesthetic score", 4.5)``."""
    column, sep, value = text.rpartition("=")
    if not sep or not column:
        raise argparse.ArgumentTypeError(f"{text!r} must look like 'COLUMN=VALUE'")
    try:
        return column, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def _resolution(text: str) -> tuple[float, float]:
    """argparse type: ``"1280x720"`` → ``(1280.0, 720.0)``."""
    width, sep, height = text.partition("x")
    try:
        if sep:
            return float(width), float(height)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} must look like WIDTHxHEIGHT, e.g. 1280x720")


def _add_index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, help="index CSV/JSONL (OpenVid-1M.csv or any with path/caption)")
    p.add_argument(
        "--videos",
        nargs="*",
        default=None,
        help="video folder, or zip parts (files or a folder of OpenVid_partN.zip, _partaa+_partab)",
    )
    p.add_argument("--path-column", default="video", help="column of the video paths (default: video)")
    p.add_argument("--caption-column", default="caption", help="column of the captions (default: caption)")
    p.add_argument("--zip-cache-dir", default=None, help="where zip member tables are cached")


def _read_index(args):
    from tsm_video.data.index import read_index

    videos = args.videos[0] if args.videos and len(args.videos) == 1 else args.videos
    return read_index(args.csv, videos, args.path_column, args.caption_column, args.zip_cache_dir)


def _subset(args) -> int:
    from data_tools.subset import make_subset

    minimum, maximum = dict(args.min), dict(args.max)
    for column, value in (("seconds", args.min_seconds), ("frame", args.min_frames)):
        if value is not None:
            minimum[column] = value
    if args.max_seconds is not None:
        maximum["seconds"] = args.max_seconds
    if args.min_resolution:
        minimum["width"], minimum["height"] = args.min_resolution
    report = make_subset(args.csv, args.out, args.n, args.seed, minimum, maximum, args.stratify, args.bins)
    print(
        json.dumps(
            {
                "rows": report.rows,
                "eligible": report.eligible,
                "written": report.written,
                "dropped": dict(report.dropped),
            },
            indent=1,
        )
    )
    if report.written < args.n:
        print(f"note: only {report.written} rows pass the thresholds (asked for {args.n})")
    return 0


def _probe(args) -> int:
    from data_tools.probe import probe_dataset

    index = _read_index(args)
    annotate = (args.csv, args.annotate) if args.annotate else None
    summary = probe_dataset(
        index,
        args.out,
        args.num_workers,
        annotate,
        args.path_column,
        deep=args.deep,
        deep_segments=args.deep_segments,
        check_decord=args.check_decord,
    )
    print(json.dumps({k: summary[k] for k in ("videos", "decodable", "bad_by_reason")}, indent=1))
    return 0


def _synth(args) -> int:
    from data_tools.synth import make_synthetic_dataset

    csv_path = make_synthetic_dataset(
        args.out,
        args.num_videos,
        args.seed,
        (args.height, args.width),
        args.num_frames,
        args.fps,
        args.max_count,
        args.domain,
    )
    print(csv_path)
    return 0


def _cache(args) -> int:
    import torch

    from tsm_video.data.dataset import VideoClipDataset
    from tsm_video.data.latent_cache import write_latent_cache

    try:
        from tsm_video.models import build_backbone
    except ImportError as err:
        raise SystemExit(f"tsm_video.models.build_backbone is not available: {err}") from err
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":  # one GPU per rank under `accelerate launch` / torchrun
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    model = build_backbone(args.backbone, args.checkpoint, device=device).eval()
    index = _read_index(args)
    dataset = VideoClipDataset(
        index,
        args.num_frames,
        args.frame_stride,
        args.target_fps,
        (args.height, args.width),
        train=False,
        seed=args.seed,
    )
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    path = write_latent_cache(
        model, dataset, args.out, args.shard_size, device, dtype, args.batch_size, args.num_workers
    )
    print(json.dumps({"index": str(path), "skipped": dict(dataset.skipped)}, indent=1))
    return 0


def register(subparsers) -> None:
    """Add `data` and its tools to the top-level parser."""
    data = subparsers.add_parser("data", help="dataset tools: subset, probe, synth, cache")
    tools = data.add_subparsers(dest="data_command", metavar="TOOL", required=True)

    p = tools.add_parser("subset", help="reproducible N-clip subset of an OpenVid-format CSV")
    p.add_argument("--csv", required=True, help="input index CSV (e.g. OpenVid-1M.csv)")
    p.add_argument("--out", required=True, help="subset CSV (same columns)")
    p.add_argument("-n", type=_positive(int), default=70_000, help="clips to keep (paper: 70,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draw (same seed, same subset)")
    p.add_argument(
        "--min",
        action="append",
        type=_bound,
        default=[],
        metavar="COLUMN=VALUE",
        help="inclusive lower bound, e.g. --min 'aesthetic score=4.5' (repeatable)",
    )
    p.add_argument(
        "--max",
        action="append",
        type=_bound,
        default=[],
        metavar="COLUMN=VALUE",
        help="inclusive upper bound",
    )
    p.add_argument("--min-seconds", type=float, help="lower bound on the 'seconds' column")
    p.add_argument("--max-seconds", type=float, help="upper bound on the 'seconds' column")
    p.add_argument("--min-frames", type=float, help="lower bound on the 'frame' column")
    p.add_argument(
        "--min-resolution",
        type=_resolution,
        metavar="WxH",
        help="WIDTHxHEIGHT lower bound; needs width/height columns (probe --annotate)",
    )
    p.add_argument("--stratify", help="column to stratify by (categorical, or numeric in quantile bins)")
    p.add_argument(
        "--bins", type=_positive(int), default=5, help="quantile bins of a numeric --stratify column"
    )
    p.set_defaults(func=_subset)

    p = tools.add_parser("probe", help="decodability, fps/length/resolution histograms, bad files")
    _add_index_args(p)
    p.add_argument("--out", required=True, help="folder for probe.json and probe.md")
    p.add_argument(
        "--num-workers", type=_non_negative, default=0, help="probe processes (0 = in this process)"
    )
    p.add_argument("--annotate", help="also write the CSV with width/height/decodable frames columns here")
    p.add_argument(
        "--deep", action="store_true", help="decode every packet: files damaged anywhere get status corrupt"
    )
    p.add_argument(
        "--deep-segments",
        type=_positive(int),
        metavar="K",
        help="like --deep, but decode only K evenly spaced keyframe-to-keyframe stretches per file",
    )
    p.add_argument(
        "--check-decord",
        action="store_true",
        help="record whether decord's random access matches a sequential decode ('decord exact' column)",
    )
    p.set_defaults(func=_probe)

    p = tools.add_parser("synth", help="synthetic OpenVid-format dataset of moving coloured shapes")
    p.add_argument("--out", required=True, help="folder for synthetic.csv, videos/ and ground_truth.json")
    p.add_argument("--num-videos", type=_positive(int), default=64, help="videos to make (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes (same seed, same videos)")
    p.add_argument("--height", type=_positive(int), default=64, help="pixels (default: 64)")
    p.add_argument("--width", type=_positive(int), default=64, help="pixels (default: 64)")
    p.add_argument("--num-frames", type=_positive(int), default=24, help="frames per video (default: 24)")
    p.add_argument("--fps", type=_positive(float), default=8.0, help="frame rate of the files (default: 8)")
    p.add_argument(
        "--max-count",
        type=_positive(int),
        default=None,
        help="at most this many shapes per scene (default: the domain's, 3 for a, 4 for b)",
    )
    p.add_argument(
        "--domain",
        choices=SYNTH_DOMAINS,
        default="a",
        help="a: the plain demo domain; b: the varied post-pretraining corpus; shifted: b on a bright "
        "background (domain adaptation). See data_tools/synth.py (default: a)",
    )
    p.set_defaults(func=_synth)

    p = tools.add_parser("cache", help="precompute VAE latents + text embeddings into safetensors shards")
    _add_index_args(p)
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--backbone", default="vc2", help="registered backbone name (vc2, vc2-tiny)")
    p.add_argument("--checkpoint", default=None, help="base weights (official model.ckpt or safetensors)")
    p.add_argument("--num-frames", type=_positive(int), default=16, help="frames per clip (default: 16)")
    stride = p.add_mutually_exclusive_group()
    stride.add_argument("--frame-stride", type=_positive(int), help="fixed stride between sampled frames")
    stride.add_argument("--target-fps", type=_positive(float), help="sample frames at this rate")
    p.add_argument("--height", type=_positive(int), default=320, help="pixels (default: 320)")
    p.add_argument("--width", type=_positive(int), default=512, help="pixels (default: 512)")
    p.add_argument("--batch-size", type=_positive(int), default=4, help="clips per encoder call")
    p.add_argument("--num-workers", type=_non_negative, default=2, help="decoding worker processes")
    p.add_argument("--shard-size", type=_positive(int), default=256, help="clips per safetensors shard")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument(
        "--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="dtype of the stored latents"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the clips' frame offsets")
    p.set_defaults(func=_cache)
