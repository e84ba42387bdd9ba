"""The full-size VideoCrafter2 UNet (1.41 B parameters, random weights): attention kernels and training.

CPU part (always): one forward at ``1×4×16×40×64`` latents (16 frames of a 320×512 video), text
context ``1×77×1024``, under ``torch.no_grad``, with SDPA attention (the default) and with the plain
einsum + softmax path (the parity reference), side by side in one process, interleaved. Time is the
median over repetitions; peak memory is the growth of the Linux peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs``) during one forward, with glibc's mmap threshold pinned at 64 KiB
so freed tensor buffers leave the resident set.
``--quick`` runs ``1×4×4×8×8`` latents without warm-up (stated in the JSON); the model is full-size
either way.

GPU part (only when CUDA is available, skipped cleanly otherwise): one bf16 training step
(autocast, frozen bf16 base weights, fp32 adapters, AdamW, activation checkpointing) at batch 1 of
16×40×64 latents with vanilla LoRA (``vc2`` preset, rank 4, scale 1) vs TSM fostering (scale 8)
vs TSM assembling (scales 8,4,2,1; the router trains): median step time and peak allocated memory.

Writes ``benchmarks/results/vc2_unet.json`` (top-level ``ratios``, ``machine``) and the
``vc2_unet`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/vc2_unet.py [--quick] [--reps N] [--threads N] [--out PATH] [--no-results-md]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import cpu_model
from results_md import write_section

from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS

ROOT = Path(__file__).resolve().parent
FULL_SHAPE = (1, 4, 16, 40, 64)
QUICK_SHAPE = (1, 4, 4, 8, 8)
WARMUP_SHAPE = (1, 4, 2, 8, 8)
BACKENDS = ("sdpa", "math")
GPU_VARIANTS = {  # name: (scales, mode, stage)
    "lora": ([1], "foster", "lora"),
    "tsm_foster": ([8], "foster", "foster"),
    "tsm_assemble": ([8, 4, 2, 1], "assemble", "assemble"),
}


def build_unet(device: str | torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> VC2UNet:
    """The real VC2 UNet with cheap random weights: built on ``meta``, materialised, filled in place.

    Matrices/kernels: variance ``1/fan_in`` (uniform); 1-D weights (norms) 1; biases 0: activations stay O(1).
    """
    unet = VC2UNet.from_lvdm_config(VC2_UNET_PARAMS, device="meta")
    unet.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim >= 2:
                bound = math.sqrt(3.0 / math.prod(p.shape[1:]))  # uniform with variance 1 / fan_in
                p.uniform_(-bound, bound, generator=generator)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return unet.to(dtype)


def make_inputs(shape: tuple[int, ...], device, seed: int = 1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=generator, device=device)
    context = torch.randn(shape[0], 77, VC2_UNET_PARAMS["context_dim"], generator=generator, device=device)
    t = torch.randint(0, 1000, (shape[0],), generator=generator, device=device)
    fps = torch.full((shape[0],), 28, device=device)
    return x, t, context, fps


# ---- CPU memory measurement -------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _pin_mmap_threshold() -> bool:
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024) == 1  # M_MMAP_THRESHOLD
    except OSError:
        return False


def timed_peak(fn: Callable[[], torch.Tensor]) -> tuple[float, float | None, torch.Tensor]:
    """(seconds, peak RSS growth in MiB or None, result) of one call of ``fn``."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = None if before is None else (_status_kib("VmHWM") - before) / 1024
    return seconds, peak, result


def cpu_part(shape: tuple[int, ...], reps: int, warmup: bool) -> dict:
    torch.manual_seed(0)
    build_start = time.perf_counter()
    unet = build_unet("cpu").eval()
    build_seconds = time.perf_counter() - build_start
    x, t, context, fps = make_inputs(shape, "cpu")
    warm = make_inputs(WARMUP_SHAPE, "cpu")

    def forward(inputs) -> Callable[[], torch.Tensor]:
        def run():
            with torch.no_grad():
                return unet(*inputs[:3], fps=inputs[3])

        return run

    runs: dict[str, list[tuple[float, float | None]]] = {b: [] for b in BACKENDS}
    for backend in BACKENDS if warmup else ():  # warm-up (kernels, allocator) on a tiny clip
        unet.set_attention_backend(backend)
        forward(warm)()
    eps = {}
    for rep in range(reps):
        order = BACKENDS if rep % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            unet.set_attention_backend(backend)
            seconds, peak, eps[backend] = timed_peak(forward((x, t, context, fps)))
            runs[backend].append((seconds, peak))
    results = {}
    for backend, values in runs.items():
        peaks = [p for _, p in values if p is not None]
        results[backend] = {
            "seconds": statistics.median(s for s, _ in values),
            "all_seconds": [round(s, 3) for s, _ in values],
            "peak_mib": max(peaks) if peaks else None,
        }
    return {
        "shape": list(shape),
        "warmup": warmup,
        "build_seconds": round(build_seconds, 1),
        "results": results,
        "max_abs_diff_sdpa_vs_math": (eps["sdpa"] - eps["math"]).abs().max().item(),
        "eps_abs_max": eps["math"].abs().max().item(),
    }


# ---- GPU training step --------------------------------------------------------------------------
def train_variant(
    variant: str, device: str, build: Callable[[], VC2UNet], shape, reps: int, warmup: int
) -> dict:
    """One variant's bf16 training step (autocast, checkpointing): median seconds and peak memory."""
    from tsm_video.tsm import TimestepContext, configure_stage, inject, trainable_parameters

    scales, mode, stage = GPU_VARIANTS[variant]
    unet = build().to(torch.bfloat16)
    unet.enable_gradient_checkpointing()
    ctx = TimestepContext(num_timesteps=1000)
    inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, alpha=4.0, mode=mode, dtype=torch.float32)
    configure_stage(unet, stage)
    params = [p for _, p in trainable_parameters(unet)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x, _, context, fps = make_inputs(shape, device)
    generator = torch.Generator(device=device).manual_seed(2)

    def step() -> None:
        t = torch.randint(0, 1000, (shape[0],), generator=generator, device=device)
        noise = torch.randn(x.shape, generator=generator, device=device)
        ctx.set(t)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            eps = unet(x, t, context, fps=fps)
        loss = torch.nn.functional.mse_loss(eps.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "all_seconds": [round(s, 4) for s in times],
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
        "trainable_params": sum(p.numel() for p in params),
    }


def train_step_part(device: str, build: Callable[[], VC2UNet], shape, reps: int, warmup: int = 2) -> dict:
    """Vanilla LoRA vs TSM fostering vs TSM assembling, one fresh model each."""
    results = {}
    for variant in GPU_VARIANTS:
        results[variant] = train_variant(variant, device, build, shape, reps, warmup)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"shape": list(shape), "warmup": warmup, "results": results}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- report -------------------------------------------------------------------------------------
def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    path = ROOT / "RESULTS.md"
    start, end = "<!-- vc2_unet:start -->", "<!-- vc2_unet:end -->"
    m, cpu = record["machine"], record["cpu"]
    shape = "×".join(map(str, cpu["shape"]))
    lines = [
        start,
        "## vc2_unet — full-size VideoCrafter2 UNet, 1.41 B params, random weights "
        "(`benchmarks/vc2_unet.py`)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}; "
        f"load average {m['load_average_start_end'][0]:.1f} → {m['load_average_start_end'][1]:.1f}. "
        f"CPU forward (no grad, fp32) at {shape} latents"
        f"{' (--quick, no warm-up; the full run uses 1×4×16×40×64)' if record['quick'] else ''}, "
        f"context 1×77×1024; median of {record['reps']} interleaved reps; memory: {record['memory_method']}.",
        "",
        "| attention | forward s | peak RSS growth MiB |",
        "| --- | --- | --- |",
    ]
    for backend in BACKENDS:
        r = cpu["results"][backend]
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {backend} | {r['seconds']:.2f} | {peak} |")
    lines += [
        "",
        f"SDPA vs math on this input: max |Δeps| {cpu['max_abs_diff_sdpa_vs_math']:.1e} "
        f"(|eps| ≤ {cpu['eps_abs_max']:.2f}).",
    ]
    gpu = record["gpu"]
    if gpu.get("skipped"):
        lines += ["", f"GPU training step: skipped ({gpu['skipped']})."]
    else:
        lines += [
            "",
            f"GPU ({m['gpu']}): one bf16 training step, checkpointing, batch 1 at "
            f"{'×'.join(map(str, gpu['shape']))}; median of {record['gpu_reps']} steps after "
            f"{gpu['warmup']} warm-up steps.",
            "",
            "| variant | step s | peak allocated MiB | trainable params |",
            "| --- | --- | --- | --- |",
        ]
        for variant, r in gpu["results"].items():
            lines.append(
                f"| {variant} | {r['seconds']:.3f} | {r['peak_mib']:.0f} | {r['trainable_params']:,} |"
            )
    lines += ["", "Ratios: " + ", ".join(f"{k} **{v:.3f}**" for k, v in record["ratios"].items()) + ".", end]
    section = "\n".join(lines)
    write_section(path, start, end, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"CPU shape {QUICK_SHAPE} instead of {FULL_SHAPE}"
    )
    parser.add_argument("--reps", type=int, default=None, help="CPU repetitions per kernel (default 1)")
    parser.add_argument("--gpu-reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "results" / "vc2_unet.json"))
    parser.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or 1
    pinned = _pin_mmap_threshold()
    load_start = os.getloadavg()[0]

    cpu = cpu_part(QUICK_SHAPE if args.quick else FULL_SHAPE, reps, warmup=not args.quick)
    if torch.cuda.is_available():
        gpu = train_step_part("cuda", lambda: build_unet("cuda"), FULL_SHAPE, args.gpu_reps)
    else:
        gpu = {"skipped": "no CUDA device"}

    sdpa, math_ = cpu["results"]["sdpa"], cpu["results"]["math"]
    ratios = {"sdpa_vs_math_time": sdpa["seconds"] / math_["seconds"]}
    if sdpa["peak_mib"] and math_["peak_mib"]:
        ratios["sdpa_vs_math_peak_memory"] = sdpa["peak_mib"] / math_["peak_mib"]
    if "results" in gpu:
        r = gpu["results"]
        for variant in ("tsm_foster", "tsm_assemble"):
            ratios[f"{variant}_vs_lora_time"] = r[variant]["seconds"] / r["lora"]["seconds"]
            ratios[f"{variant}_vs_lora_peak_memory"] = r[variant]["peak_mib"] / r["lora"]["peak_mib"]
    record = {
        "benchmark": "vc2_unet",
        "quick": args.quick,
        "quick_note": f"CPU shape {list(QUICK_SHAPE)} instead of {list(FULL_SHAPE)}, no warm-up"
        if args.quick
        else None,
        "reps": reps,
        "gpu_reps": args.gpu_reps,
        "memory_method": "peak RSS growth during one forward (VmHWM after /proc/self/clear_refs; "
        f"glibc mmap threshold pinned: {pinned})",
        "ratios": ratios,
        "cpu": cpu,
        "gpu": gpu,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_start_end": [load_start, os.getloadavg()[0]],
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"ratios": ratios, "cpu": cpu["results"]}, indent=1))
    if not args.no_results_md:
        _write_section(record)


if __name__ == "__main__":
    main()
