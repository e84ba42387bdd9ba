"""One VC2-sized attention projection (1280 → 1280): base vs vanilla LoRA vs TSM layers.

Side by side in one process, same input and timesteps, two token layouts of VC2 at 16×40×64
latents (two 8-frame clips, so one batch mixes timesteps; 40 960 tokens per layer as one
16-frame clip):

- ``spatial``: (b·f, h·w, c) = (16, 2560, 1280); ``temporal``: (b·h·w, f, c) = (5120, 8, 1280).

Training variants (forward + backward; base frozen, input requires grad as inside a network):
``base``; ``lora`` (plain two-matmul LoRA, rank 4, the baseline); ``tsm_n1`` (our scale-1
layer); ``foster`` (scale 8, the two clips in different intervals); ``assemble`` (scales
8,4,2,1, experts frozen, router trains). Inference (forward, no grad): ``base_infer`` vs
``merged`` (scale-8 expert merged into W0).

Time: median over interleaved repetitions (order alternating; inference rows get 3× the reps).
Peak memory: Linux peak resident set (``VmHWM``) growth during one iteration after resetting
it through ``/proc/self/clear_refs``, with glibc's mmap threshold pinned at 64 KiB so every
tensor buffer is mapped on allocation and unmapped on free (otherwise freed buffers stay
resident and the growth reads 0).
``--quick`` shrinks width to 320 and the latent grid to 16×32 (stated in the JSON).
Writes ``benchmarks/results/tsm_layer.json`` (``ratios``: ``foster_vs_lora``,
``assemble_vs_lora``, ``merged_vs_base``; time, lower is better, worst layout) and the
``tsm_layer`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/tsm_layer.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import cpu_model
from results_md import write_section
from torch import nn

from tsm_video.tsm import TimestepContext, TSMLinear, configure_stage

ROOT = Path(__file__).resolve().parent
TRAIN = ("base", "lora", "tsm_n1", "foster", "assemble")
INFER = ("base_infer", "merged")
# merged = base: the merged forward is base(x) plus a cached lookup, so "equal" is judged within
# the ±5 % repeat-to-repeat noise of a shared 2-core machine.
GOALS = {"foster_vs_lora": 1.10, "assemble_vs_lora": 1.30, "merged_vs_base": 1.05}


class PlainLoRA(nn.Module):
    """Baseline: ``base(x) + (α/r)·B(A(x))`` with two ``nn.Linear`` (peft's layout)."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 4.0) -> None:
        super().__init__()
        self.base, self.scaling = base, alpha / rank
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.normal_(self.lora_B.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def _layer(variant: str, width: int, ctx: TimestepContext, device: str = "cpu") -> nn.Module:
    """``variant``'s layer on ``device``, initialised on the CPU (the same weights on every device)
    and moved before merging (a merged TSM layer refuses to move)."""
    torch.manual_seed(0)
    base = nn.Linear(width, width)
    base.requires_grad_(False)
    if variant in ("base", "base_infer"):
        return base.to(device)
    if variant == "lora":
        return PlainLoRA(base).to(device)
    scales, mode = {
        "tsm_n1": ([1], "foster"),
        "foster": ([8], "foster"),
        "merged": ([8], "foster"),
        "assemble": ([8, 4, 2, 1], "assemble"),
    }[variant]
    layer = TSMLinear(base, None if scales == [1] else ctx, scales, rank=4, alpha=4.0, mode=mode)
    with torch.no_grad():  # experts and router off zero so every branch computes real values
        for name, p in layer.named_parameters():
            if "lora_B" in name or "router" in name:
                p.normal_(0, 0.01)
    layer.tsm_name = variant
    configure_stage(layer, "assemble" if mode == "assemble" else "foster")
    layer.to(device)
    if variant == "merged":
        layer.merge(0)
    return layer


def _step(layer: nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    if not train:
        return lambda: layer(x)

    def run() -> None:
        layer(x).sum().backward()
        x.grad = None
        for p in layer.parameters():
            p.grad = None

    return run


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _pin_mmap_threshold() -> bool:
    """Make glibc map (and unmap) every block ≥ 64 KiB, so RSS follows live tensors."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024) == 1  # M_MMAP_THRESHOLD
    except OSError:
        return False


def _peak_mib(fn: Callable[[], None]) -> float | None:
    """Peak RSS growth (MiB) while ``fn`` runs; None where /proc/self/clear_refs is unavailable."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) / 1024


def run_layout(name: str, shape: tuple[int, ...], width: int, reps: int) -> dict:
    ctx = TimestepContext(1000)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, width, generator=gen)
    results = {}
    for group, variants, t in ((True, TRAIN, [100, 900]), (False, INFER, [100, 110])):
        ctx.set(torch.tensor(t))  # two clips; training: intervals 0 and 7 of 8; inference: both in 0
        xin = x.clone().requires_grad_(group)
        steps = {v: _step(_layer(v, width, ctx), xin, group) for v in variants}
        ctx_grad = torch.enable_grad() if group else torch.no_grad()
        with ctx_grad:
            peaks = {v: _peak_mib(fn) for v, fn in steps.items()}  # also the warm-up
            times: dict[str, list[float]] = {v: [] for v in variants}
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            order = list(steps.items())
            for rep in range(reps if group else 3 * reps):  # inference rows are cheap: 3× the reps
                for v, fn in order if rep % 2 == 0 else order[::-1]:  # interleaved, alternating order
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    times[v].append(time.perf_counter() - t0)
                    cpu[v].append(time.process_time() - c0)
        for v in variants:
            results[v] = {
                "seconds": statistics.median(times[v]),
                "all_seconds": times[v],
                "cpu_seconds": statistics.median(cpu[v]),
                "all_cpu_seconds": cpu[v],
                "peak_mib": peaks[v],
            }
        del steps, xin
    print(name, {v: round(r["seconds"] * 1e3, 1) for v, r in results.items()}, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 320, 16×32 latents (< 1 min on 2 cores)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3)")
    parser.add_argument("--out", default=str(ROOT / "results" / "tsm_layer.json"))
    args = parser.parse_args()
    width, (h, w) = (320, (16, 32)) if args.quick else (1280, (40, 64))
    clips, frames = 2, 8
    reps = args.reps or 3
    pinned = _pin_mmap_threshold()
    load = [os.getloadavg()[0]]
    # spatial: (b f) (h w) c; temporal: (b h w) f c
    layouts = {"spatial": (clips * frames, h * w), "temporal": (clips * h * w, frames)}
    results = {name: run_layout(name, shape, width, reps) for name, shape in layouts.items()}
    load.append(os.getloadavg()[0])

    def ratio(a: str, b: str, key: str = "seconds") -> dict:
        return {n: results[n][a][key] / results[n][b][key] for n in layouts}

    per_layout = {
        "foster_vs_lora": ratio("foster", "lora"),
        "assemble_vs_lora": ratio("assemble", "lora"),
        "merged_vs_base": ratio("merged", "base_infer"),
        "tsm_n1_vs_lora": ratio("tsm_n1", "lora"),
    }
    ratios = {k: max(v.values()) for k, v in per_layout.items() if k in GOALS}
    cpu_ratios = {
        k: max(ratio(*pair, key="cpu_seconds").values())
        for k, pair in (
            ("foster_vs_lora", ("foster", "lora")),
            ("assemble_vs_lora", ("assemble", "lora")),
            ("merged_vs_base", ("merged", "base_infer")),
        )
    }
    record = {
        "name": "tsm_layer",
        "quick": args.quick,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "load_average_start_end": load,
        },
        "setup": {
            "width": width,
            "latents": [clips * frames, h, w],
            "clips": clips,
            "frames_per_clip": frames,
            "layouts": {k: [*v, width] for k, v in layouts.items()},
            "rank": 4,
            "alpha": 4.0,
            "timesteps_train": [100, 900],
            "timesteps_infer": [100, 110],
            "reps": reps,
            "memory_method": "peak RSS growth during one iteration (VmHWM after "
            f"/proc/self/clear_refs; glibc mmap threshold pinned: {pinned})",
            "quick_note": "width 320 and a 16×32 latent grid instead of 1280 and 40×64"
            if args.quick
            else None,
        },
        "results": results,
        "ratios": ratios,
        "ratios_per_layout": per_layout,
        "cpu_time_ratios": cpu_ratios,
        "goals": GOALS,
        "goals_met": {k: ratios[k] <= g for k, g in GOALS.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(
        json.dumps(
            {"ratios": ratios, "cpu_time_ratios": cpu_ratios, "goals_met": record["goals_met"]}, indent=1
        )
    )
    _write_section(record)


def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    path = ROOT / "RESULTS.md"
    start, end = "<!-- tsm_layer:start -->", "<!-- tsm_layer:end -->"
    m, s, r = record["machine"], record["setup"], record["results"]

    def cell(layout: str, v: str) -> str:
        peak = r[layout][v]["peak_mib"]
        return (
            f"{r[layout][v]['seconds']:.3f} | {r[layout][v]['cpu_seconds']:.3f} | "
            f"{'n/a' if peak is None else f'{peak:.0f}'}"
        )

    rows = [f"| {v} | {cell('spatial', v)} | {cell('temporal', v)} |" for v in (*TRAIN, *INFER)]
    lay = s["layouts"]
    section = "\n".join(
        [
            start,
            "## tsm_layer — one 1280→1280 projection (`benchmarks/tsm_layer.py`)",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, CPU"
            f"{' (--quick: ' + s['quick_note'] + ')' if record['quick'] else ''}. "
            f"Layouts: spatial {lay['spatial']}, temporal {lay['temporal']} "
            f"(two {s['frames_per_clip']}-frame clips of {s['latents'][1]}×{s['latents'][2]} latents, "
            "mixed timesteps), rank 4. Load average "
            f"{m['load_average_start_end'][0]:.1f} → {m['load_average_start_end'][1]:.1f}. Training rows: "
            f"forward + backward, base frozen; inference rows: forward only. "
            f"Median of {s['reps']} (inference: {3 * s['reps']}) interleaved reps, "
            "alternating order (wall and process CPU time); "
            f"memory: {s['memory_method']}.",
            "",
            "| variant | spatial s | spatial CPU s | spatial peak MiB | temporal s | temporal CPU s "
            "| temporal peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Ratios (time, worst layout): "
            + ", ".join(
                f"{k} **{v:.3f}** (goal ≤ {GOALS[k]:.2f}{'' if record['goals_met'][k] else ', not met'})"
                for k, v in record["ratios"].items()
            )
            + ". CPU-time ratios: "
            + ", ".join(f"{k} {v:.3f}" for k, v in record["cpu_time_ratios"].items())
            + ".",
            end,
        ]
    )
    write_section(path, start, end, section)


if __name__ == "__main__":
    main()
