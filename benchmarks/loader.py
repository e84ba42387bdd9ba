"""Clip loading: this suite's frame-exact subset decode vs whole-video-decode-then-subsample.

All methods make the same 16-frame, stride-3 clips (random starts, resized and centre-cropped
to 320×512, float (3, T, H, W) in [-1, 1]) from 720p h264 videos that this script writes
(keyframe every 2 s). Methods: the common pattern (decord decodes every frame, then the clip
is subsampled); the tsm-video loader with its default backend (PyAV, frames identified by
timestamp, decoder-side scaling); and the loader reading with decord, as it may for files
``data probe --check-decord`` proved exact (this script checks that proof on its videos first).
Each method runs in its own fresh process — one loader worker — which reports clips/s, CPU
time and its peak RSS (``VmHWM``), so they are measured side by side in one run on one
machine. Workers import torch first and record its footprint apart: the trainer imports torch
whatever the loader does, and forked loader workers share those pages with it, so the goal
(peak RSS ≤ 0.25× of whole-video decode) is stated both with and without torch's import.
Writes benchmarks/results/loader.json and a section of benchmarks/RESULTS.md.

    python benchmarks/loader.py            # 4 videos × 10 s, 3 rounds × 8 clips per method
    python benchmarks/loader.py --quick    # 1 video × 10 s, 1 round × 3 clips (< 1 min on 2 idle cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model, status_mb
from results_md import write_section

ROOT = Path(__file__).resolve().parents[1]

NUM_FRAMES, STRIDE, SIZE = 16, 3, (320, 512)


def _frames(num_frames: int, seed: int):
    """720p frames: a textured plane panning under moving noise (real h264 work), one at a time."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:720, 0 : 1280 + 4 * num_frames].astype(np.float32)
    plane = 128 + 60 * np.sin(x / 40.0) * np.cos(y / 55.0)
    plane = np.stack([plane, np.roll(plane, 37, axis=0), 255 - plane], -1).astype(np.uint8)
    noise = rng.integers(0, 24, (720 + num_frames, 1280, 1), dtype=np.uint8)
    for t in range(num_frames):
        yield plane[:, 4 * t : 4 * t + 1280] + noise[t : t + 720]


def make_videos(out: Path, count: int, seconds: float, fps: int = 30) -> list[Path]:
    from tsm_video.data.video_io import write_mp4

    return [
        write_mp4(
            out / f"v{i}.mp4",
            _frames(int(seconds * fps), i),
            fps,
            crf=23,
            keyframe_interval=2 * fps,
            preset="superfast",
        )
        for i in range(count)
    ]


def run_worker(method: str, videos: list[str], clips: int, seed: int) -> dict:
    """One loader worker: make ``clips`` clips with ``method``; report throughput and peak RSS."""
    start_rss = status_mb("VmRSS")
    import torch  # noqa: F401 - first, so its footprint is known apart

    torch_rss = status_mb("VmRSS") - start_rss
    from tsm_video.data.clips import ClipSampler, resize_center_crop, to_model_pixels
    from tsm_video.data.dataset import load_clip

    if method in ("full", "subset_decord"):
        import decord  # only where decord is used: its bundled FFmpeg is resident memory too

        from tsm_video.data.video_io import DECORD_THREADS
    baseline = status_mb("VmRSS")
    sampler = ClipSampler(NUM_FRAMES, frame_stride=STRIDE)
    rng = np.random.default_rng(seed)
    cpu0 = time.process_time()
    start = time.perf_counter()
    for i in range(clips):
        path = videos[i % len(videos)]
        if method == "subset":
            frames, _ = load_clip(path, sampler, SIZE, rng)
        elif method == "subset_decord":  # as for a file whose decord access probe proved exact
            frames, _ = load_clip(path, sampler, SIZE, rng, backend="auto", decord_verified=True)
        else:  # the common pattern: decode every frame, then subsample
            reader = decord.VideoReader(path, num_threads=DECORD_THREADS)
            everything = reader.get_batch(list(range(len(reader)))).asnumpy()  # (N, 720, 1280, 3)
            indices, _ = sampler.sample(np.arange(len(everything)) / reader.get_avg_fps(), rng)
            frames = resize_center_crop(everything[indices], SIZE)
            del everything, reader
        pixels = to_model_pixels(frames)
        assert pixels.shape == (3, NUM_FRAMES, *SIZE)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    peak = status_mb("VmHWM")
    return {
        "clips": clips,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "torch_import_rss_mb": torch_rss,
        "import_rss_mb": baseline,
        "peak_rss_above_imports_mb": peak - baseline,
    }


def _combine(runs: list[dict]) -> dict:
    """Sum clips and times over rounds; peak RSS is the largest any round reached."""
    clips = sum(r["clips"] for r in runs)
    seconds, cpu = sum(r["seconds"] for r in runs), sum(r["cpu_seconds"] for r in runs)
    peak, imports = max(r["peak_rss_mb"] for r in runs), max(r["import_rss_mb"] for r in runs)
    torch_rss = min(r["torch_import_rss_mb"] for r in runs)
    return {
        "torch_import_rss_mb": torch_rss,
        "peak_rss_without_torch_mb": peak - torch_rss,
        "clips": clips,
        "rounds": len(runs),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "clips_per_s": clips / seconds,
        "clips_per_cpu_s": clips / cpu,
        "peak_rss_mb": peak,
        "import_rss_mb": imports,
        "peak_rss_above_imports_mb": max(r["peak_rss_above_imports_mb"] for r in runs),
    }


def _machine() -> dict:
    import av
    import decord

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "decord": decord.__version__,
        "av": av.__version__,
    }


def _write_results_md(result: dict) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    full, ratios = result["full_decode"], result["ratios"]
    rows = [
        ("whole-video decode (decord), then subsample", full),
        ("tsm-video loader, default backend (PyAV, frame-exact)", result["subset_decode"]),
    ]
    if result.get("subset_decode_decord"):
        rows.append(("tsm-video loader via decord (probe-proven file)", result["subset_decode_decord"]))
    table = [
        f"| {name} | {r['clips_per_s']:.2f} | {r['clips_per_cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
        f"{r['peak_rss_without_torch_mb']:.0f} | {r['peak_rss_above_imports_mb']:.0f} |"
        for name, r in rows
    ]
    machine = result["machine"]
    body = "\n".join(
        [
            "## Data loader (`benchmarks/loader.py`)",
            "",
            f"{result['setup']}. {result['note']}. Machine: {machine['cpu']}, {machine['cores']} cores; "
            f"{'quick run' if result['quick'] else 'full run'}; one worker process per method, same run. "
            f"decord's random access on these videos: {result['decord_exact']}.",
            "",
            "| method | clips/s | clips per CPU-s | peak RSS (MB) | peak RSS without torch's import (MB) "
            "| peak RSS above all imports (MB) |",
            "|---|---|---|---|---|---|",
            *table,
            "",
            "Ratios (tsm-video default / whole-video): throughput "
            f"**{ratios['throughput_vs_full_decode']:.2f}×** "
            f"({ratios['throughput_per_cpu_s_vs_full_decode']:.2f}× per CPU-second; goal ≥ 3×); peak RSS "
            f"**{ratios['peak_rss_without_torch_vs_full_decode']:.2f}×** without torch's import "
            f"({full['torch_import_rss_mb']:.0f} MB in every worker, shared with the trainer; goal ≤ 0.25×), "
            f"{ratios['peak_rss_vs_full_decode']:.2f}× with it, "
            f"{ratios['peak_rss_above_imports_vs_full_decode']:.3f}× counting only memory above all imports.",
            "",
        ]
    )
    start, end = "<!-- loader:start -->", "<!-- loader:end -->"
    write_section(path, start, end, f"{start}\n{body}{end}")


def _decord_exact(videos: list[str]) -> str:
    """Whether decord's random access matches a sequential decode on every benchmark video."""
    from tsm_video.data.video_io import have_decord, verify_decord

    if not have_decord():
        return "decord not installed"
    exact = [verify_decord(v) for v in videos]
    return "proven exact (verify_decord)" if all(exact) else f"NOT exact on {exact.count(False)} video(s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["subset", "subset_decord", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--videos", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--clips", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.videos, args.clips, seed=args.seed)))
        return 0
    count, seconds, clips, rounds = (1, 10.0, 3, 1) if args.quick else (4, 10.0, 8, 3)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        videos = [str(p) for p in make_videos(Path(tmp), count, seconds)]
        made = time.perf_counter() - t0
        decord_exact = _decord_exact(videos)
        methods = ["full", "subset"] + (["subset_decord"] if decord_exact.startswith("proven") else [])
        # methods alternate over rounds, so background load on a shared machine hits all alike
        runs: dict[str, list[dict]] = {method: [] for method in methods}
        for round_ in range(rounds):
            for method in runs:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        method,
                        "--videos",
                        *videos,
                        "--clips",
                        str(clips),
                        "--seed",
                        str(round_),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {method: _combine(r) for method, r in runs.items()}
    sub, full = results["subset"], results["full"]
    result = {
        "benchmark": "loader",
        "quick": args.quick,
        "setup": f"{count} h264 videos of {seconds:g} s, 1280×720 at 30 fps, keyframe every 2 s, "
        "x264 superfast "
        f"(written in {made:.1f} s); {rounds} alternating rounds × {clips} clips per method of "
        f"{NUM_FRAMES} frames at stride {STRIDE}, one decoder thread per worker, "
        f"random starts, resized + centre-cropped to {SIZE[0]}×{SIZE[1]}, float (3, T, H, W)",
        "note": (
            "quick: one video, one round of 3 clips per method (full run: 4 videos, 3 rounds × 8 clips); "
            if args.quick
            else ""
        )
        + f"1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
        f"on {os.cpu_count()} cores "
        "(clips_per_cpu_s is the load-independent view)",
        "decord_exact": decord_exact,
        "subset_decode": sub,
        "subset_decode_decord": results.get("subset_decord"),
        "full_decode": full,
        "ratios": {
            "throughput_vs_full_decode": sub["clips_per_s"] / full["clips_per_s"],
            "throughput_per_cpu_s_vs_full_decode": sub["clips_per_cpu_s"] / full["clips_per_cpu_s"],
            "peak_rss_vs_full_decode": sub["peak_rss_mb"] / full["peak_rss_mb"],
            "peak_rss_without_torch_vs_full_decode": sub["peak_rss_without_torch_mb"]
            / full["peak_rss_without_torch_mb"],
            "peak_rss_above_imports_vs_full_decode": sub["peak_rss_above_imports_mb"]
            / full["peak_rss_above_imports_mb"],
        },
        "machine": _machine(),
    }
    out_path = ROOT / "benchmarks" / "results" / "loader.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    _write_results_md(result)
    print(json.dumps(result["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
