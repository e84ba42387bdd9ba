"""Eval reader memory: every frame of a 1-second 4K clip, as EvalCrafter's metrics receive it.

``eval_crafter.runner`` hands each metric the whole video as one (F, H, W, 3) uint8 array
(``tsm_video.data.video_io.read_frames``). Methods, each in a fresh process that reports its
peak RSS (``VmHWM``) and the RSS after its imports, side by side in one run:

- ``decord_batch``: decord ``get_batch(all).asnumpy()`` — what ``read_frames`` did before
  (decord's own NDArray plus the numpy copy);
- ``list_stack``: PyAV frames into a list, then ``np.stack`` — the old fallback;
- ``read_frames``: the current reader, frames decoded one by one into one preallocated array.

Writes benchmarks/results/eval_reader.json and a section of benchmarks/RESULTS.md.

    python benchmarks/eval_reader.py            # 3840×2160, 30 frames
    python benchmarks/eval_reader.py --quick    # 1920×1080, 30 frames
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model, status_mb
from results_md import write_section

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("decord_batch", "list_stack", "read_frames")


def make_clip(path: Path, height: int, width: int, frames: int = 30) -> Path:
    """A textured, moving clip (real h264 work) of ``frames`` frames at 30 fps."""
    from tsm_video.data.video_io import write_mp4

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)

    def frame(t: int) -> np.ndarray:
        plane = 128 + 60 * np.sin((x + 8 * t) / 40.0) * np.cos(y / 55.0)
        return np.repeat(plane[..., None], 3, axis=-1).astype(np.uint8)

    return write_mp4(path, (frame(t) for t in range(frames)), 30, crf=23, preset="ultrafast")


def run_worker(method: str, path: str) -> dict:
    """Decode every frame of ``path`` with ``method``; report its peak RSS."""
    import av

    from tsm_video.data.video_io import read_frames

    if method == "decord_batch":
        import decord
    baseline = status_mb("VmRSS")
    start = time.perf_counter()
    if method == "decord_batch":
        reader = decord.VideoReader(path, num_threads=1)
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    elif method == "list_stack":
        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    else:
        frames, _ = read_frames(path)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    return {
        "frames_shape": list(frames.shape),
        "frames_mb": frames.nbytes / 2**20,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "import_rss_mb": baseline,
        "peak_rss_above_imports_mb": peak - baseline,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.path)))
        return 0
    height, width = (1080, 1920) if args.quick else (2160, 3840)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = make_clip(Path(tmp) / "clip.mp4", height, width)
        runs = {}
        for method in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", method, "--path", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[method] = json.loads(out.stdout.strip().splitlines()[-1])
    import av
    import decord

    cpu = cpu_model()
    result = {
        "benchmark": "eval_reader",
        "clip": f"{width}×{height}, 30 frames at 30 fps, h264 (x264 ultrafast, crf 23)",
        "load_average": [load_before, os.getloadavg()[0]],
        "methods": runs,
        "ratio_read_frames_vs_decord_batch": runs["read_frames"]["peak_rss_above_imports_mb"]
        / runs["decord_batch"]["peak_rss_above_imports_mb"],
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "av": av.__version__,
            "decord": decord.__version__,
        },
    }
    out_path = ROOT / "benchmarks" / "results" / "eval_reader.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| {m} | {r['frames_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_above_imports_mb']:.0f} | "
        f"{r['seconds']:.2f} |"
        for m, r in runs.items()
    ]
    body = "\n".join(
        [
            "## Eval reader (`benchmarks/eval_reader.py`)",
            "",
            f"Every frame of one clip ({result['clip']}) as one uint8 array; one fresh process per "
            f"method, same run. Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
            f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}.",
            "",
            "| method | frames (MB) | peak RSS (MB) | peak RSS above imports (MB) | seconds |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"read_frames / decord get_batch (memory above imports): "
            f"**{result['ratio_read_frames_vs_decord_batch']:.2f}×**.",
            "",
        ]
    )
    start, end = "<!-- eval_reader:start -->", "<!-- eval_reader:end -->"
    write_section(ROOT / "benchmarks" / "RESULTS.md", start, end, f"{start}\n{body}{end}")
    print(json.dumps({m: r["peak_rss_above_imports_mb"] for m, r in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
