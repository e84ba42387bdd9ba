"""Seconds per generated clip: plain VC2 vs vanilla LoRA merged vs TSM stage 1 (merged per
interval) vs TSM stage 2 (core merged per interval + router-gated context experts).

Side by side in one process: four models with identical base weights (same seed), the same
prompt and clip seed, the real sampling path (``generate_clips``: text encoder, DDIM with CFG,
the ``ExpertSwitcher`` DDIM callback, VAE decode). Adapters: ``vc2`` targets (to_k/to_v of
every attention), rank 4, random non-zero experts and router. LoRA = scale 1; stage 1 = scale
8; stage 2 = scales 8, 4, 2, 1. As in ``tsm-video generate``, experts stay merged from one clip
to the next (``keep_merged``): every interval switch of every clip is timed (a clip starts with
one, as the previous clip ended in interval 0); the one-off first merge is in the warm-up.

CPU (default): the ``vc2-tiny`` backbone at 64×64, 8 frames, 10 steps (``--quick``: 32×32,
4 frames, 4 steps). CUDA when available: the full ``vc2`` config (1.85 B parameters, random
weights) at 320×512, 16 frames, 50 steps (``--quick``: 10 steps) under bf16 autocast.
Time: the best of interleaved repetitions (variants round-robin with a rotating start, after one
warm-up each; the minimum is the estimate least disturbed by other jobs on a shared machine;
medians are recorded too), wall seconds and, on CPU, process CPU seconds.
``--compile``: every variant's UNet is compiled in place (``torch.compile``, default inductor),
the warm-up compiles, and the timed clips must trigger no new graph (checked through dynamo's
counters: experts switch without recompiling); results go to ``results/generate_compile.json``
and their own RESULTS.md section. ``--quick`` runs likewise go to ``generate_quick*.json`` and
their own section.
Writes ``benchmarks/results/generate.json`` (top-level ``ratios``: ``merged_vs_base`` = the
slower of LoRA and stage 1, ``router_vs_base`` = stage 2; also ``lora_vs_base``,
``foster_vs_base``; from process CPU seconds on CPU, where a shared machine makes wall time
swing by tens of percent, from wall seconds on CUDA; ``wall_ratios`` always) and the
``generate`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/generate.py [--quick] [--reps N] [--device cpu|cuda] [--threads N] [--vc2-step]
                                  [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_model
from results_md import write_section
from torch import nn

from tsm_video.generation import ExpertSwitcher, GenerateSettings, clip_seed, generate_clips
from tsm_video.models import build_backbone
from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS
from tsm_video.tsm import TimestepContext, inject, tsm_layers

ROOT = Path(__file__).resolve().parent
VARIANTS = {"base": None, "lora": ([1], "foster"), "foster": ([8], "foster"),
            "assemble": ([8, 4, 2, 1], "assemble")}
GOALS = {"merged_vs_base": 1.02, "router_vs_base": 1.10}
PROMPT = "a corgi running on the beach at sunset"


def _add_experts(unet: nn.Module, variant: str, num_timesteps: int) -> TimestepContext:
    """Inject the variant's TSM layers into ``unet``; experts and router random and non-zero."""
    scales, mode = VARIANTS[variant]
    ctx = TimestepContext(num_timesteps)
    inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, alpha=4.0, mode=mode)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in tsm_layers(unet):
            for name, p in layer.named_parameters():
                if not name.startswith("base."):
                    p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.05)
    return ctx


def _model(backbone: str, device: str, variant: str, dtype: torch.dtype | None):
    """Base weights from one seed; the variant's TSM layers with random non-zero parameters."""
    torch.manual_seed(0)
    model = build_backbone(backbone, device=device, dtype=dtype).eval().requires_grad_(False)
    if VARIANTS[variant] is None:
        return model, None
    model.tsm_ctx = _add_experts(model.unet, variant, model.schedule.num_timesteps)
    return model, ExpertSwitcher(model, model.schedule.num_timesteps)


def vc2_step(reps: int) -> dict:
    """CPU seconds of one denoiser call of the full-width VC2 UNet per variant (4 frames of 8×8
    latents, t = 501, experts merged for that interval). The variants share one copy of the base
    weights (merging never writes them)."""
    torch.manual_seed(0)
    base = VC2UNet.from_lvdm_config(VC2_UNET_PARAMS).eval().requires_grad_(False)
    shared = {id(t): t for t in (*base.parameters(), *base.buffers())}
    unets = {"base": (base, None)}
    for variant in ("lora", "foster", "assemble"):
        unet = copy.deepcopy(base, memo=dict(shared))
        ctx = _add_experts(unet, variant, 1000)
        ExpertSwitcher(unet, 1000)(0, 501)
        unets[variant] = (unet, ctx)
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([501])  # (B, C, F, h, w)
    context, fps = torch.randn(1, 77, VC2_UNET_PARAMS["context_dim"]), torch.tensor([28])
    times: dict[str, list[float]] = {v: [] for v in unets}
    order = list(unets)
    with torch.no_grad():
        for rep in range(reps + 1):  # the first round warms up; rotating start as in main()
            for v in order[rep % len(order):] + order[:rep % len(order)]:
                unet, ctx = unets[v]
                if ctx is not None:
                    ctx.set(t)
                start = time.process_time()
                unet(x, t, context, fps=fps)
                if rep:
                    times[v].append(time.process_time() - start)
    best = {v: min(ts) for v, ts in times.items()}
    return {"cpu_seconds_per_call": best, "reps": reps, "latent": [1, 4, 4, 8, 8],
            "tsm_layers": len(tsm_layers(unets["assemble"][0])),
            "ratios": {f"{v}_vs_base": best[v] / best["base"] for v in ("lora", "foster", "assemble")}}


def _time_one(model, switcher, settings, device: str, autocast) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    with autocast():
        generate_clips(model, [PROMPT], [clip_seed(0, PROMPT)], settings, switcher, keep_merged=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None, write: bool = True) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (< 1 min on 2 cores)")
    parser.add_argument("--reps", type=int, help="timed repetitions per variant (default 2 quick, 5 full)")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vc2-step", action="store_true", help="also time one denoiser call of the "
                        "full-width VC2 UNet per variant on CPU (needs ~6 GB of memory, a few minutes)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 avoids "
                        "spinning GEMM barriers on a machine shared with other jobs")
    parser.add_argument("--compile", action="store_true", help="torch.compile each variant's UNet in place")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 15)
    if args.device == "cuda":
        backbone, dtype = "vc2", torch.bfloat16
        settings = GenerateSettings(steps=10 if args.quick else 50)  # VC2: 320×512, 16 frames, eta 1, CFG 12

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        backbone, dtype = "vc2-tiny", None
        settings = (GenerateSettings(height=32, width=32, num_frames=4, steps=4) if args.quick
                    else GenerateSettings(height=64, width=64, num_frames=8, steps=10))
        autocast = contextlib.nullcontext
    load_start = os.getloadavg()[0]
    models = {v: _model(backbone, args.device, v, dtype) for v in VARIANTS}
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    compile_info = None
    if args.compile:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(VARIANTS))
        for model, _ in models.values():
            model.unet.compile()
    warm = time.perf_counter()
    for model, switcher in models.values():  # warm-up (kernels, allocator, first merges, compilation)
        _time_one(model, switcher, settings, args.device, autocast)
    if args.compile:
        compile_info = {"warmup_seconds": time.perf_counter() - warm, "graphs_after_warmup": _graphs()}
    order = list(models)
    for rep in range(reps):  # round robin, rotating who goes first
        for v in order[rep % len(order):] + order[:rep % len(order)]:
            times[v].append(_time_one(*models[v], settings, args.device, autocast))
    for _, switcher in models.values():
        if switcher is not None:
            switcher.close()
    if args.compile:
        compile_info["graphs_after_timing"] = _graphs()
        compile_info["recompiled_during_timing"] = compile_info["graphs_after_timing"] != compile_info[
            "graphs_after_warmup"]
    results = {v: {"seconds_per_clip": min(w for w, _ in t),
                   "median_seconds_per_clip": statistics.median(w for w, _ in t),
                   "cpu_seconds_per_clip": min(c for _, c in t),
                   "reps_wall": [round(w, 4) for w, _ in t]} for v, t in times.items()}

    def versus_base(key: str) -> dict:
        return {f"{v}_vs_base": results[v][key] / results["base"][key]
                for v in ("lora", "foster", "assemble")}

    wall_ratios, cpu_ratios = versus_base("seconds_per_clip"), versus_base("cpu_seconds_per_clip")
    per = cpu_ratios if args.device == "cpu" else wall_ratios  # CPU: work done, not other jobs' load
    ratios = {"merged_vs_base": max(per["lora_vs_base"], per["foster_vs_base"]),
              "router_vs_base": per["assemble_vs_base"], **per}
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    record = {
        "benchmark": "generate",
        "quick": args.quick,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "device": device_name, "torch": torch.__version__, "python": platform.python_version(),
                    "load_average_start_end": [load_start, os.getloadavg()[0]]},
        "setup": {"backbone": backbone, "dtype": str(dtype or torch.float32), "settings": settings.to_dict(),
                  "batch": 1, "reps": reps, "rank": 4, "targets": "vc2",
                  "tsm_layers": len(tsm_layers(models["assemble"][0]))},
        "results": results,
        "ratios": ratios,
        "ratio_basis": "process CPU seconds (1 thread)" if args.device == "cpu" else "wall seconds",
        "wall_ratios": wall_ratios,
        "goals": GOALS,
        "goals_met": {k: ratios[k] <= GOALS[k] for k in GOALS},
        "vc2_step": vc2_step(min(reps, 4)) if args.vc2_step else None,
        "compile": compile_info,
    }
    if write:
        out = ROOT / "results" / f"{_tag(record).replace('-', '_')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        _write_section(record)
    print(json.dumps({"results": results, "ratios": ratios, "wall_ratios": wall_ratios,
                      "vc2_step": record["vc2_step"], "compile": compile_info}, indent=2))
    return record


def _tag(record: dict) -> str:
    """This run's RESULTS.md section / JSON name: full and --quick runs, eager or compiled, kept apart."""
    return "generate" + ("-quick" if record["quick"] else "") + ("-compile" if record["compile"] else "")


def _graphs() -> int:
    """Graphs dynamo has compiled so far in this process."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    path = ROOT / "RESULTS.md"
    tag = _tag(record)
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    m, s, r = record["machine"], record["setup"], record["results"]
    compiled = record["compile"]
    st = s["settings"]
    step = record["vc2_step"]
    names = {"base": "plain VC2", "lora": "vanilla LoRA, merged once", "foster": "TSM stage 1 (n=8), merged "
             "per interval", "assemble": "TSM stage 2 (8,4,2,1), core merged + context experts"}
    rows = [f"| {names[v]} | {r[v]['seconds_per_clip']:.3f} | {r[v]['cpu_seconds_per_clip']:.3f} | "
            f"{r[v]['seconds_per_clip'] / r['base']['seconds_per_clip']:.3f} |" for v in VARIANTS]
    section = "\n".join([
        start,
        f"## {tag} — seconds per clip (`benchmarks/generate.py{' --compile' if compiled else ''}`)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, device {m['device']}, torch "
        f"{m['torch']}. Backbone `{s['backbone']}` ({s['dtype']}, random weights), {st['height']}×"
        f"{st['width']}, {st['num_frames']} frames, DDIM {st['steps']} steps, eta {st['eta']}, CFG "
        f"{st['guidance_scale']}, batch 1, {s['tsm_layers']} TSM layers (rank 4). "
        f"{'Quick run. ' if record['quick'] else ''}Best of {s['reps']} interleaved reps after a warm-up "
        "(medians in the JSON); "
        f"load average {m['load_average_start_end'][0]:.1f} → {m['load_average_start_end'][1]:.1f}.",
        "",
        "| model | s / clip | CPU s / clip | × base |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"Ratios ({record['ratio_basis']}): " + ", ".join(
            f"{k} **{record['ratios'][k]:.3f}** (goal ≤ {GOALS[k]:.2f}"
            f"{'' if record['goals_met'][k] else ', not met'})" for k in GOALS) + ". Wall-time ratios: "
        + ", ".join(f"{k} {v:.3f}" for k, v in record["wall_ratios"].items()) + ". A merged layer runs "
        "one base-sized linear with W0 + ΔW (no per-call check), so merged LoRA's distance from 1.000 "
        "is about this run's noise floor: on a machine shared with other jobs, differences of that size "
        "are not resolved.",
        *([] if not compiled else [
            "",
            f"Compiled UNets (`torch.compile`): warm-up incl. compiling {compiled['warmup_seconds']:.0f} s; "
            f"{compiled['graphs_after_warmup']} graphs after the warm-up, {compiled['graphs_after_timing']} "
            f"after the timed clips (recompiled while switching experts: "
            f"{'yes' if compiled['recompiled_during_timing'] else 'no'})."]),
        *([] if step is None else [
            "",
            f"Full-width VC2 UNet, one denoiser call on CPU ({step['tsm_layers']} TSM layers, latents "
            f"{step['latent']}, t = 501 with the experts of its interval merged; best of {step['reps']}): "
            + ", ".join(f"{v} {sec:.2f} s" for v, sec in step["cpu_seconds_per_call"].items()) + "; "
            + ", ".join(f"{k} **{v:.3f}**" for k, v in step["ratios"].items()) + "."]),
        end,
    ])
    write_section(path, start, end, section)


if __name__ == "__main__":
    main()
