"""Eval reader memory on a 1-second 4K clip: the whole video in one array vs each metric's reads.

``eval_crafter.runner`` used to hand every metric the whole video as one (F, H, W, 3) uint8
array; it now hands a lazy :class:`~tsm_video.data.video_frames.VideoFrames`, and each metric
decodes only the frames it indexes, full size (every official metric resizes from the full
frame itself, see docs/evalcrafter.md). Methods, each in a fresh process that reports its peak
RSS (``VmHWM``) and the RSS after its imports, side by side in one run:

- whole video, as before: ``decord_batch`` (decord ``get_batch(all).asnumpy()``, the oldest
  reader: decord's NDArray plus the numpy copy), ``list_stack`` (PyAV frames into a list, then
  ``np.stack``), ``read_frames`` (one preallocated array; what the runner used until now);
- the frames each default metric reads through ``VideoFrames`` (the reads only, no model:
  the model's own buffers are the same either way): ``is`` (every frame, batches of 8),
  ``amplitude`` (every frame, batches of 8 pairs: 9 frames), ``action`` (the 5×16 test clips'
  distinct frames, 8 at a time), ``blip_bleu`` (5 frames), ``count_color`` (every 5th frame),
  and ``all_default`` (all of these in turn on one ``VideoFrames``, as the runner does).

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
WHOLE = ("decord_batch", "list_stack", "read_frames")
LAZY = ("is", "amplitude", "action", "blip_bleu", "count_color", "all_default")
METHODS = WHOLE + LAZY
BATCH = 8  # the runner's default --batch-size


def make_clip(path: Path, height: int, width: int, frames: int = 30) -> Path:
    """A textured, moving clip (real h264 work) of ``frames`` frames at 30 fps."""
    from tsm_video.data.video_io import write_mp4

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)

    def frame(t: int) -> np.ndarray:
        plane = 128 + 60 * np.sin((x + 8 * t) / 40.0) * np.cos(y / 55.0)
        return np.repeat(plane[..., None], 3, axis=-1).astype(np.uint8)

    return write_mp4(path, (frame(t) for t in range(frames)), 30, crf=23, preset="ultrafast")


def _metric_reads(method: str, frames) -> int:
    """Read what metric ``method`` reads from ``frames`` (as its code indexes them); bytes held at most."""
    from eval_crafter.metrics.action import sample_test_clips
    from eval_crafter.metrics.blip_bleu import caption_indices
    from eval_crafter.metrics.detection import FRAME_STEP

    n, held = len(frames), 0
    if method == "is":
        for start in range(0, n, BATCH):
            held = max(held, frames[start : start + BATCH].nbytes)
    elif method == "amplitude":
        for start in range(0, n - 1, BATCH):
            held = max(held, frames[start : min(start + BATCH, n - 1) + 1].nbytes)
    elif method == "action":
        unique = np.unique(sample_test_clips(n))
        for start in range(0, len(unique), BATCH):
            held = max(held, frames[unique[start : start + BATCH]].nbytes)
    elif method == "blip_bleu":
        held = frames[caption_indices(n)].nbytes
    else:  # count / color: every FRAME_STEP-th frame, all at once (tracking needs them together)
        held = frames[np.arange(0, n, FRAME_STEP)].nbytes
    return held


def run_worker(method: str, path: str) -> dict:
    """Read ``path`` as ``method`` does; report its peak RSS."""
    import av

    import eval_crafter.metrics.action  # noqa: F401 - the metric modules' imports, before the baseline
    import eval_crafter.metrics.blip_bleu  # noqa: F401
    import eval_crafter.metrics.detection  # noqa: F401
    from tsm_video.data.video_frames import VideoFrames
    from tsm_video.data.video_io import read_frames

    if method == "decord_batch":
        import decord
    baseline = status_mb("VmRSS")
    start = time.perf_counter()
    if method == "decord_batch":
        reader = decord.VideoReader(path, num_threads=1)
        held = reader.get_batch(list(range(len(reader)))).asnumpy().nbytes
    elif method == "list_stack":
        with av.open(path) as container:
            held = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).nbytes
    elif method == "read_frames":
        held = read_frames(path)[0].nbytes
    else:
        with VideoFrames(path) as frames:
            reads = LAZY[:-1] if method == "all_default" else (method,)
            held = max(_metric_reads(m, frames) for m in reads)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    return {
        "frames_mb": held / 2**20,
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
        "ratio_all_default_vs_read_frames": runs["all_default"]["peak_rss_above_imports_mb"]
        / runs["read_frames"]["peak_rss_above_imports_mb"],
        "ratio_all_default_vs_decord_batch": runs["all_default"]["peak_rss_above_imports_mb"]
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
            f"One clip ({result['clip']}): the whole video as one uint8 array (`decord_batch`, "
            "`list_stack`, `read_frames`: the runner until now) vs the frames each default metric reads "
            "through the runner's lazy `VideoFrames` (reads only, no model); one fresh process per "
            f"method, same run. Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
            f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}.",
            "",
            "| method | frames held at once (MB) | peak RSS (MB) | peak RSS above imports (MB) | seconds |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "All default metrics' reads through VideoFrames, memory above imports: "
            f"**{result['ratio_all_default_vs_read_frames']:.2f}×** of `read_frames`, "
            f"**{result['ratio_all_default_vs_decord_batch']:.2f}×** of decord `get_batch`.",
            "",
        ]
    )
    start, end = "<!-- eval_reader:start -->", "<!-- eval_reader:end -->"
    write_section(ROOT / "benchmarks" / "RESULTS.md", start, end, f"{start}\n{body}{end}")
    print(json.dumps({m: r["peak_rss_above_imports_mb"] for m, r in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
