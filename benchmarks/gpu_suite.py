"""The GPU suite: one short script (about 8 minutes on an H200) for the first lent CUDA device.

Parts, each timed with the device synchronised, in one process:

- ``train``: the full-size VC2 UNet (random weights) training step: bf16 base weights under bf16
  autocast, fp32 adapters, AdamW, gradient checkpointing, 16×320×512 clips (latents 16×40×64),
  batch 1 and 2, for vanilla LoRA (scale 1), TSM fostering (scale 8) and assembling (scales
  8,4,2,1, the router trains): peak allocated memory and median s/step (goal: peak ≤ 40 GiB).
- ``sampling``: one clip, 50 DDIM steps with CFG (full VC2 incl. text encoder and VAE, random
  weights), fp32 vs bf16 autocast: s/clip and the max / mean |difference| of the pixels.
- ``attention``: one UNet forward (bf16 autocast) with SDPA vs xformers (where installed) vs the
  math reference: median seconds and max |Δε| against SDPA.
- ``tsm_layer``: one 1280→1280 projection (``benchmarks/tsm_layer.py``'s variants) on the device:
  forward+backward of LoRA / fostering / assembling, and inference of base vs merged stage 1 vs
  merged stage 2.
- ``generate``: ``benchmarks/generate.py --quick`` on the device (full VC2, bf16, 10 steps): the
  merged / stage-2 vs base ratios.

A part runs only if the time left in ``--budget-s`` covers its estimate (skipped parts say so).
``--dry-run`` runs every part on the CPU at tiny sizes (vc2-tiny, batch 1, 2 steps, 1 rep) and in float32
where the GPU run uses bfloat16 (bf16 kernels are very slow on most CPUs) to check the script
itself (the tests do this); it writes nothing unless ``--out`` / ``--write`` ask for it.
A CUDA run writes ``benchmarks/results/gpu_suite.json`` and the ``gpu_suite`` section of
``benchmarks/RESULTS.md``.

    python benchmarks/gpu_suite.py [--dry-run] [--out PATH] [--write] [--budget-s 480] [--parts P ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from results_md import write_section

ROOT = Path(__file__).resolve().parent
PARTS = ("train", "sampling", "attention", "tsm_layer", "generate")
ESTIMATE_S = {"train": 120, "sampling": 120, "attention": 20, "tsm_layer": 20, "generate": 120}  # on an H200
TRAIN_VARIANTS = {
    "lora": ([1], "foster", "lora"),
    "foster": ([8], "foster", "foster"),
    "assemble": ([8, 4, 2, 1], "assemble", "assemble"),
}
GOAL_TRAIN_PEAK_GIB = 40.0
PROMPT = "a corgi running on the beach at sunset"


def sizes(dry_run: bool) -> dict:
    """Full sizes on CUDA; tiny ones for the dry run (same code paths). ``low``: the reduced precision."""
    if dry_run:
        return {
            "backbone": "vc2-tiny",
            "low": torch.float32,
            "batches": (1,),
            "latent": (4, 2, 8, 8),
            "sample": {"height": 32, "width": 32, "num_frames": 2, "steps": 2},
            "width": 64,
            "tokens": (4, 64),
            "reps": 1,
            "warmup": 1,
        }
    return {
        "backbone": "vc2",
        "low": torch.bfloat16,
        "batches": (1, 2),
        "latent": (4, 16, 40, 64),
        "sample": {},
        "width": 1280,
        "tokens": (16, 2560),
        "reps": 3,
        "warmup": 1,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str, reps: int, warmup: int) -> list[float]:
    """Wall seconds of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _unet(sz: dict, device: str):
    from tsm_video.models.vc2 import VC2UNet
    from tsm_video.models.vc2.configs import VC2_ARCH, VC2_TINY_ARCH

    torch.manual_seed(0)
    arch = {"vc2": VC2_ARCH, "vc2-tiny": VC2_TINY_ARCH}[sz["backbone"]]
    return VC2UNet.from_lvdm_config(arch["unet"], device=device)


def _unet_inputs(unet, batch: int, latent: tuple[int, ...], device: str, seed: int = 1):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, *latent, generator=gen, device=device)
    context = torch.randn(batch, 77, unet.config["context_dim"], generator=gen, device=device)
    return x, context, torch.full((batch,), 28, device=device)


def _train_one(sz: dict, device: str, batch: int, variant: str) -> dict:
    """One variant's bf16 training step with checkpointing: median s/step and peak memory."""
    from tsm_video.tsm import TimestepContext, configure_stage, inject, trainable_parameters

    scales, mode, stage = TRAIN_VARIANTS[variant]
    low = sz["low"]
    unet = _unet(sz, device).to(low)
    unet.enable_gradient_checkpointing()
    ctx = TimestepContext(1000)
    inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, alpha=4.0, mode=mode, dtype=torch.float32)
    configure_stage(unet, stage)
    params = [p for _, p in trainable_parameters(unet)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x, context, fps = _unet_inputs(unet, batch, sz["latent"], device)
    gen = torch.Generator(device=device).manual_seed(2)

    def step() -> None:
        t = torch.randint(0, 1000, (batch,), generator=gen, device=device)
        ctx.set(t)
        with torch.autocast(device, dtype=low, enabled=low != torch.float32):
            eps = unet(x, t, context, fps=fps)
        torch.nn.functional.mse_loss(eps.float(), torch.randn_like(eps, dtype=torch.float32)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, optimizer state
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _timed(step, device, sz["reps"], warmup=0)
    return {
        "seconds_per_step": statistics.median(times),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "trainable_params": sum(p.numel() for p in params),
    }


def part_train(sz: dict, device: str) -> dict:
    """The training step per variant and batch size (a fresh model each)."""
    results = {}
    for batch in sz["batches"]:
        for variant in TRAIN_VARIANTS:
            results[f"{variant}_b{batch}"] = _train_one(sz, device, batch, variant)
            _free(device)
    peaks = [r["peak_gib"] for r in results.values() if r["peak_gib"] is not None]
    return {
        "latent": list(sz["latent"]),
        "results": results,
        "max_peak_gib": max(peaks) if peaks else None,
        "fits_40gib": max(peaks) <= GOAL_TRAIN_PEAK_GIB if peaks else None,
    }


def _backbone(sz: dict, device: str):
    from tsm_video.models import build_backbone

    torch.manual_seed(0)
    return build_backbone(sz["backbone"], device=device).eval().requires_grad_(False)


def part_sampling(sz: dict, device: str) -> dict:
    """One 50-step clip in fp32 and under bf16 autocast: s/clip and pixel differences."""
    from tsm_video.generation import GenerateSettings, clip_seed, generate_clips

    model = _backbone(sz, device)
    settings = GenerateSettings(**sz["sample"])
    seed = clip_seed(0, PROMPT)
    generate_clips(model, [PROMPT], [seed], GenerateSettings(**{**sz["sample"], "steps": 1}))  # warm-up
    clips, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        low = sz["low"] if precision == "bf16" else torch.float32
        autocast = torch.autocast(device, dtype=low, enabled=low != torch.float32)
        _sync(device)
        start = time.perf_counter()
        with autocast:
            clips[precision] = generate_clips(model, [PROMPT], [seed], settings)
        _sync(device)
        seconds[precision] = time.perf_counter() - start
    diff = (clips["fp32"] - clips["bf16"]).abs()
    return {
        "settings": settings.to_dict(),
        "seconds_per_clip": seconds,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def part_attention(sz: dict, device: str) -> dict:
    """UNet forward per attention kernel: median seconds, max |Δε| against SDPA."""
    from tsm_video.models.vc2.attention import xformers_available

    unet = _unet(sz, device).eval().requires_grad_(False)
    x, context, fps = _unet_inputs(unet, 1, sz["latent"], device)
    t = torch.tensor([500], device=device)
    backends = ["sdpa", "math"] + (["xformers"] if device == "cuda" and xformers_available() else [])
    results, eps = {}, {}
    for backend in backends:
        unet.set_attention_backend(backend)

        def forward(backend: str = backend) -> None:
            with torch.no_grad(), torch.autocast(device, dtype=sz["low"], enabled=sz["low"] != torch.float32):
                eps[backend] = unet(x, t, context, fps=fps).float()

        results[backend] = {"seconds": statistics.median(_timed(forward, device, sz["reps"], sz["warmup"]))}
    for backend in backends:
        results[backend]["max_abs_diff_vs_sdpa"] = float((eps[backend] - eps["sdpa"]).abs().max())
    return {
        "latent": [1, *sz["latent"]],
        "results": results,
        "xformers": "installed" if "xformers" in backends else "not installed (or no CUDA)",
    }


def part_tsm_layer(sz: dict, device: str) -> dict:
    """``tsm_layer.py``'s variants on the device: training rows forward + backward (mixed t),
    inference rows forward (one interval; ``assemble_merged`` is the precomputed stage-2 path)."""
    from tsm_layer import INFER, TRAIN, _layer, _step

    from tsm_video.tsm import TimestepContext

    ctx = TimestepContext(1000)
    x = torch.randn(*sz["tokens"], sz["width"], generator=torch.Generator().manual_seed(0)).to(device)
    results = {}
    for train, variants, t in ((True, TRAIN, [100, 900]), (False, (*INFER, "assemble_merged"), [100, 110])):
        ctx.set(torch.tensor(t, device=device))
        xin = x.clone().requires_grad_(train)
        for variant in variants:
            layer = _layer("assemble" if variant == "assemble_merged" else variant, sz["width"], ctx, device)
            if variant == "assemble_merged":
                layer.merge(0)  # the fused stage-2 path
            with torch.set_grad_enabled(train):
                times = _timed(_step(layer, xin, train), device, 5 * sz["reps"], sz["warmup"])
            results[variant] = {"seconds": statistics.median(times)}
    sec = {v: r["seconds"] for v, r in results.items()}
    return {
        "tokens": [*sz["tokens"], sz["width"]],
        "results": results,
        "ratios": {
            "foster_vs_lora": sec["foster"] / sec["lora"],
            "assemble_vs_lora": sec["assemble"] / sec["lora"],
            "merged_vs_base": sec["merged"] / sec["base_infer"],
            "assemble_merged_vs_base": sec["assemble_merged"] / sec["base_infer"],
        },
    }


def part_generate(sz: dict, device: str) -> dict:
    """``generate.py --quick`` on the device (no files written): per-variant s/clip and ratios
    (CUDA: full VC2 in bf16, 10 steps; CPU: vc2-tiny)."""
    import generate

    record = generate.main(
        ["--device", device, "--quick", "--no-vc2-step", "--reps", str(max(1, sz["reps"] - 1))], write=False
    )
    return {k: record[k] for k in ("setup", "results", "ratios", "wall_ratios", "goals_met")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--out", type=Path, help="JSON path (default results/gpu_suite.json on CUDA)")
    parser.add_argument("--write", action="store_true", help="also write RESULTS.md in a dry run")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip parts that would overrun this")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or --dry-run to check the script on the CPU")
    device = "cpu" if args.dry_run else "cuda"
    sz = sizes(args.dry_run)
    start = time.perf_counter()
    record = {
        "benchmark": "gpu_suite",
        "dry_run": args.dry_run,
        "machine": {
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_start": os.getloadavg()[0],
        },
        "sizes": {
            k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, torch.dtype) else v
            for k, v in sz.items()
        },
        "budget_s": args.budget_s,
        "parts": {},
    }
    runners = {
        "train": part_train,
        "sampling": part_sampling,
        "attention": part_attention,
        "tsm_layer": part_tsm_layer,
        "generate": part_generate,
    }
    for part in args.parts:
        left = args.budget_s - (time.perf_counter() - start)
        if not args.dry_run and left < ESTIMATE_S[part]:
            record["parts"][part] = {
                "skipped": f"time budget: {left:.0f} s left, estimate {ESTIMATE_S[part]} s"
            }
            continue
        part_start = time.perf_counter()
        record["parts"][part] = {
            **runners[part](sz, device),
            "wall_seconds": time.perf_counter() - part_start,
        }
        print(f"{part}: {record['parts'][part]['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    record["total_seconds"] = time.perf_counter() - start
    out = args.out or (None if args.dry_run else ROOT / "results" / "gpu_suite.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    if not args.dry_run or args.write:
        _write_section(record)
    return record


def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    start, end = "<!-- gpu_suite:start -->", "<!-- gpu_suite:end -->"
    m, p = record["machine"], record["parts"]
    dry = " (dry run: tiny sizes on the CPU)" if record["dry_run"] else ""
    lines = [
        start,
        "## gpu_suite — training, sampling and kernels on one GPU (`benchmarks/gpu_suite.py`)",
        "",
        f"Device {m['device']}, torch {m['torch']}{dry}; total {record['total_seconds']:.0f} s.",
    ]
    skipped = [f"{k}: {v['skipped']}" for k, v in p.items() if "skipped" in v]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]
    if "results" in p.get("train", {}):
        tr = p["train"]
        lines += [
            "",
            f"Training step, latents {tr['latent']} (bf16 autocast, checkpointing, AdamW):",
            "",
            "| variant | s / step | peak GiB | trainable |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {k} | {r['seconds_per_step']:.3f} | {r['peak_gib'] or float('nan'):.1f} | "
            f"{r['trainable_params']:,} |"
            for k, r in tr["results"].items()
        ]
        lines += [
            "",
            f"Max peak {tr['max_peak_gib'] or float('nan'):.1f} GiB: fits in 40 GiB: {tr['fits_40gib']}.",
        ]
    if "seconds_per_clip" in p.get("sampling", {}):
        sm = p["sampling"]
        st = sm["settings"]
        lines += [
            "",
            f"Sampling one clip ({st['steps']} DDIM steps, {st['height']}×{st['width']}, "
            f"{st['num_frames']} frames, CFG {st['guidance_scale']}): fp32 "
            f"{sm['seconds_per_clip']['fp32']:.1f} s, bf16 {sm['seconds_per_clip']['bf16']:.1f} s; "
            f"pixels fp32 vs bf16: max |Δ| {sm['max_abs_diff']:.3g}, mean |Δ| {sm['mean_abs_diff']:.3g}.",
        ]
    if "results" in p.get("attention", {}):
        at = p["attention"]
        lines += [
            "",
            f"Attention ({at['xformers']}), UNet forward at {at['latent']}: "
            + ", ".join(
                f"{k} {r['seconds']:.3f} s (max |Δε| vs sdpa {r['max_abs_diff_vs_sdpa']:.2g})"
                for k, r in at["results"].items()
            )
            + ".",
        ]
    if "ratios" in p.get("tsm_layer", {}):
        lines += [
            "",
            f"TSM layer {p['tsm_layer']['tokens']}: "
            + ", ".join(f"{k} **{v:.3f}**" for k, v in p["tsm_layer"]["ratios"].items())
            + ".",
        ]
    if "ratios" in p.get("generate", {}):
        g = p["generate"]
        lines += [
            "",
            f"Generate (`{g['setup']['backbone']}`, {g['setup']['settings']['steps']} steps, "
            f"{g['setup']['dtype']}): "
            + ", ".join(f"{k} **{v:.3f}**" for k, v in g["ratios"].items())
            + f"; goals met: {g['goals_met']}.",
        ]
    lines.append(end)
    write_section(ROOT / "RESULTS.md", start, end, "\n".join(lines))


if __name__ == "__main__":
    main()
