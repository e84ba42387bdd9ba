"""Clip loading: this suite's frame-exact subset decode vs whole-video-decode-then-subsample.

All methods make the same 16-frame, stride-3 clips (random starts, resized and centre-cropped
to 320×512) from 720p h264 videos that this script writes (keyframe every 2 s), and end where
a ``StreamLoader`` worker hands a clip over: a (3, T, H, W) uint8 tensor (the float
conversion runs in the trainer's process, the same for every method). Methods: the common
pattern (decord decodes every frame, then the clip is subsampled); the tsm-video loader with
its default backend (PyAV, frames identified by timestamp, decoder-side scaling and crop); and
the loader reading with decord, as it may for files ``data probe --check-decord`` proved exact
(this script checks that proof on its videos first). Every method's worker gets the set-up
``StreamLoader`` gives its workers (``release_large_blocks``).

Each method runs in two kinds of worker, side by side in one run, methods alternating:

- **fresh process** (``spawn``): a new interpreter imports torch, then the loader, then makes
  the clips. Reports clips/s and CPU time (the throughput figures), peak RSS (``VmHWM``:
  everything the process ever had resident, imports included), torch's import footprint
  (RSS before/after ``import torch``) and the peak above all imports.
- **forked worker** (``fork``, torch's DataLoader default on Linux): a parent imports what the
  trainer has (torch, ``tsm_video.data``'s clip stack, decord) and forks the worker that makes
  the clips. Reports the worker's own ``VmHWM`` — as the kernel counts it, nothing
  subtracted: the pages it inherited and mapped (anonymous ones all are at fork: ~300 MB of
  torch's import) count in full although the trainer shares them — plus its peak RSS growth
  after the fork, and PSS / USS (private pages) sampled from ``/proc/PID/smaps_rollup`` every
  50 ms by the parent (sampled peaks are lower bounds).

Goal (issue 13): peak RSS ≤ 0.25× of whole-video decode, throughput ≥ 3×. Writes
benchmarks/results/loader.json and a section of benchmarks/RESULTS.md.

    python benchmarks/loader.py            # 4 videos × 10 s, 3 rounds × 8 clips per method and worker kind
    python benchmarks/loader.py --quick    # 1 video × 10 s, 1 round × 3 clips each (about a minute)
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
METHOD_NAMES = {
    "full": "whole-video decode (decord), then subsample",
    "subset": "tsm-video loader, default backend (PyAV, frame-exact)",
    "subset_decord": "tsm-video loader via decord (probe-proven file)",
}


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


def _clips(method: str, videos: list[str], clips: int, seed: int) -> tuple[float, float]:
    """Make ``clips`` clips with ``method`` (imports done); (wall s, CPU s)."""
    from tsm_video.data.clips import ClipSampler, resize_center_crop, to_channels_first
    from tsm_video.data.dataset import load_clip
    from tsm_video.data.stream import release_large_blocks
    from tsm_video.data.video_io import DECORD_THREADS

    release_large_blocks()  # what StreamLoader's worker_init_fn does, for every method alike
    sampler = ClipSampler(NUM_FRAMES, frame_stride=STRIDE)
    rng = np.random.default_rng(seed)
    cpu0, start = time.process_time(), time.perf_counter()
    for i in range(clips):
        path = videos[i % len(videos)]
        if method == "subset":
            frames, _ = load_clip(path, sampler, SIZE, rng)
        elif method == "subset_decord":  # as for a file whose decord access probe proved exact
            frames, _ = load_clip(path, sampler, SIZE, rng, backend="auto", decord_verified=True)
        else:  # the common pattern: decode every frame, then subsample
            import decord

            reader = decord.VideoReader(path, num_threads=DECORD_THREADS)
            everything = reader.get_batch(list(range(len(reader)))).asnumpy()  # (N, 720, 1280, 3)
            indices, _ = sampler.sample(np.arange(len(everything)) / reader.get_avg_fps(), rng)
            frames = resize_center_crop(everything[indices], SIZE)
            del everything, reader
        pixels = to_channels_first(frames)  # what the worker hands over
        assert pixels.shape == (3, NUM_FRAMES, *SIZE)
        del frames, pixels
    return time.perf_counter() - start, time.process_time() - cpu0


def run_worker(method: str, videos: list[str], clips: int, seed: int) -> dict:
    """Fresh-process worker: import torch, then the loader; make the clips; report throughput and memory."""
    start_rss = status_mb("VmRSS")
    import torch  # noqa: F401 - first, so its footprint is known apart

    torch_rss = status_mb("VmRSS") - start_rss
    import tsm_video.data.dataset  # noqa: F401 - the loader stack (video_io imports decord when present)

    baseline = status_mb("VmRSS")
    elapsed, cpu = _clips(method, videos, clips, seed)
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


def _rollup_mb(pid: int) -> dict[str, float]:
    """Rss, Pss and USS (private clean + dirty) of process ``pid`` in MB; {} once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.endswith("kB\n")}
    except (OSError, ValueError):
        return {}
    return {"pss": kb["Pss"] / 1024, "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def _forked_child(conn, method: str, videos: list[str], clips: int, seed: int) -> None:
    at_fork = status_mb("VmRSS")
    elapsed, cpu = _clips(method, videos, clips, seed)
    conn.send({"rss_at_fork_mb": at_fork, "peak_rss_mb": status_mb("VmHWM"), "seconds": elapsed})
    conn.close()


def run_forked(method: str, videos: list[str], clips: int, seed: int) -> dict:
    """Forked worker: this process imports what the trainer has, forks the worker, samples its memory."""
    import multiprocessing

    import torch  # noqa: F401 - the trainer's imports, shared with its forked workers

    import tsm_video.data.dataset  # noqa: F401

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_forked_child, args=(send, method, videos, clips, seed))
    child.start()
    peaks = {"pss": 0.0, "uss": 0.0}
    while not receive.poll(0.05):
        for key, value in _rollup_mb(child.pid).items():
            peaks[key] = max(peaks[key], value)
    result = receive.recv()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"forked worker exited with {child.exitcode}")
    return {
        "clips": clips,
        "parent_rss_mb": status_mb("VmRSS"),
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_at_fork_mb": result["rss_at_fork_mb"],
        "peak_rss_growth_mb": result["peak_rss_mb"] - result["rss_at_fork_mb"],
        "sampled_peak_pss_mb": peaks["pss"],
        "sampled_peak_uss_mb": peaks["uss"],
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


def _combine_forked(runs: list[dict]) -> dict:
    """The largest of every memory figure over rounds."""
    keys = ("peak_rss_mb", "rss_at_fork_mb", "peak_rss_growth_mb")
    keys += ("sampled_peak_pss_mb", "sampled_peak_uss_mb")
    return {"rounds": len(runs), **{key: max(r[key] for r in runs) for key in keys}}


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
    ratios, names = result["ratios"], METHOD_NAMES
    fresh = [
        f"| {names[m]} | {r['clips_per_s']:.2f} | {r['clips_per_cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
        f"{r['torch_import_rss_mb']:.0f} | {r['peak_rss_above_imports_mb']:.0f} |"
        for m, r in result["fresh"].items()
    ]
    forked = [
        f"| {names[m]} | {r['peak_rss_mb']:.0f} | {r['peak_rss_growth_mb']:.0f} | "
        f"{r['sampled_peak_pss_mb']:.0f} | {r['sampled_peak_uss_mb']:.0f} |"
        for m, r in result["forked"].items()
    ]
    machine = result["machine"]
    body = "\n".join(
        [
            "## Data loader (`benchmarks/loader.py`)",
            "",
            f"{result['setup']}. {result['note']}. Machine: {machine['cpu']}, {machine['cores']} cores; "
            f"{'quick run' if result['quick'] else 'full run'}; methods alternate, same run. "
            f"decord's random access on these videos: {result['decord_exact']}.",
            "",
            "Fresh-process worker (spawn: it imports torch and the loader itself):",
            "",
            "| method | clips/s | clips per CPU-s | peak RSS (MB) | of which torch's import (MB) "
            "| peak RSS above all imports (MB) |",
            "|---|---|---|---|---|---|",
            *fresh,
            "",
            "Forked worker (fork from a process that imported torch and the loader, as DataLoader "
            "does on Linux; PSS/USS sampled every 50 ms, lower bounds):",
            "",
            "| method | worker peak RSS (MB) | peak RSS growth after fork (MB) | peak PSS (MB) "
            "| peak USS, private (MB) |",
            "|---|---|---|---|---|",
            *forked,
            "",
            "Ratios (tsm-video default / whole-video): throughput "
            f"**{ratios['throughput']:.2f}×** ({ratios['throughput_per_cpu_s']:.2f}× per CPU-second; "
            "goal ≥ 3×). Peak RSS (goal ≤ 0.25×): forked worker "
            f"**{ratios['forked_peak_rss']:.2f}×** (kernel VmHWM, nothing subtracted); fresh process "
            f"**{ratios['fresh_peak_rss']:.2f}×** (torch's import, "
            f"{result['fresh']['full']['torch_import_rss_mb']:.0f} MB, counted in both); "
            f"above all imports {ratios['fresh_above_imports']:.3f}×; forked growth "
            f"{ratios['forked_growth']:.3f}×, sampled USS {ratios['forked_uss']:.3f}×.",
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
    parser.add_argument("--fork", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_forked if args.fork else run_worker
        print(json.dumps(run(args.worker, args.videos, args.clips, seed=args.seed)))
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
        runs: dict[tuple[str, bool], list[dict]] = {(m, fork): [] for fork in (False, True) for m in methods}
        for round_ in range(rounds):
            for method, fork in runs:
                command = [sys.executable, __file__, "--worker", method, "--videos", *videos]
                command += ["--clips", str(clips), "--seed", str(round_)] + (["--fork"] if fork else [])
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                runs[method, fork].append(json.loads(out.stdout.strip().splitlines()[-1]))
    fresh = {m: _combine(r) for (m, fork), r in runs.items() if not fork}
    forked = {m: _combine_forked(r) for (m, fork), r in runs.items() if fork}
    sub, full, fsub, ffull = fresh["subset"], fresh["full"], forked["subset"], forked["full"]
    result = {
        "benchmark": "loader",
        "quick": args.quick,
        "setup": f"{count} h264 videos of {seconds:g} s, 1280×720 at 30 fps, keyframe every 2 s, "
        "x264 superfast "
        f"(written in {made:.1f} s); {rounds} alternating rounds × {clips} clips per method and "
        f"worker kind of {NUM_FRAMES} frames at stride {STRIDE}, one decoder thread per worker, "
        f"random starts, resized + centre-cropped to {SIZE[0]}×{SIZE[1]}, handed over as "
        "(3, T, H, W) uint8",
        "note": (
            "quick: one video, one round of 3 clips per method (full run: 4 videos, 3 rounds × 8 clips); "
            if args.quick
            else ""
        )
        + f"1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
        f"on {os.cpu_count()} cores "
        "(clips_per_cpu_s is the load-independent view)",
        "decord_exact": decord_exact,
        "fresh": fresh,
        "forked": forked,
        "ratios": {
            "throughput": sub["clips_per_s"] / full["clips_per_s"],
            "throughput_per_cpu_s": sub["clips_per_cpu_s"] / full["clips_per_cpu_s"],
            "forked_peak_rss": fsub["peak_rss_mb"] / ffull["peak_rss_mb"],
            "fresh_peak_rss": sub["peak_rss_mb"] / full["peak_rss_mb"],
            "fresh_above_imports": sub["peak_rss_above_imports_mb"] / full["peak_rss_above_imports_mb"],
            "forked_growth": fsub["peak_rss_growth_mb"] / ffull["peak_rss_growth_mb"],
            "forked_uss": fsub["sampled_peak_uss_mb"] / ffull["sampled_peak_uss_mb"],
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
