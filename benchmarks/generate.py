"""Seconds per generated clip: plain VC2 vs vanilla LoRA merged vs TSM stage 1 (merged per
interval) vs TSM stage 2 (core merged per interval + router-gated context experts).

Side by side in one process: six models with identical base weights (same seed), the same
prompt and clip seed, the real sampling path (``generate_clips``: text encoder, DDIM with CFG,
the ``ExpertSwitcher`` DDIM callback, VAE decode). Adapters: ``vc2`` targets (to_k/to_v of
every attention), rank 4, random non-zero experts and router. LoRA = scale 1; stage 1 = scale
8, twice: with generation's default (each reached interval's merged weights kept, a switch back
is one copy) and ``foster_recompute`` (``--no-keep-experts``: ``W0 + ΔW`` computed at every
switch); stage 2 twice: at scales 8, 1 (core 8 + the scale-1 context expert: every shipped config's
``tsm.scales``, the paper's choice, Tab. 11 / Sec. 4.4; the stage-2 goal is judged on it) and
at 8, 4, 2, 1 (the multi-context override; three context experts, reported with its own FLOP
floor). As in ``tsm-video generate``, experts stay merged from one clip
to the next (``keep_merged``): every interval switch of every clip is timed (a clip starts with
one, as the previous clip ended in interval 0); the one-off first merge is in the warm-up.

CPU (default): the ``vc2-tiny`` backbone at 64×64, 8 frames, 10 steps (``--quick``: 32×32,
4 frames, 4 steps). CUDA when available: the full ``vc2`` config (1.85 B parameters, random
weights) at 320×512, 16 frames, 50 steps (``--quick``: 10 steps) under bf16 autocast.
Time: interleaved repetitions (variants round-robin with a rotating start, after one warm-up
each), wall and process CPU seconds, best (the estimate least disturbed by other jobs on a shared
machine) and median of each. Next to time, load-independent counts: aten ops and FLOPs of one
denoiser call per variant (``counts.op_counts`` / ``counts.flops``: the ops a merged model
dispatches, and whether a gap is arithmetic), and with ``--instructions`` (CPU, needs valgrind)
the instructions one clip executes per variant under callgrind, in a child process after the
timing (slow: ~50× native; repeatable within a fraction of a percent whatever the load).
The full-width VC2 figure (one denoiser call of the 1.4 B UNet per variant on CPU, CPU seconds,
ops and FLOPs) is part of every CPU run (``--no-vc2-step`` skips it).
``--compile``: every variant's UNet is compiled in place (``torch.compile``, default inductor),
the warm-up compiles, and the timed clips must trigger no new graph (checked through dynamo's
counters: experts switch without recompiling); results go to ``results/generate_compile.json``
and their own RESULTS.md section. ``--quick`` runs likewise go to ``generate_quick*.json`` and
their own section.
Writes ``benchmarks/results/generate.json`` (top-level ``ratios``: ``merged_vs_base`` = the
slower of LoRA and stage 1, ``router_vs_base`` = stage 2 at [8, 1], ``router_multi_vs_base``
= stage 2 at [8, 4, 2, 1]; also ``<variant>_vs_base``; from the best process CPU seconds on
CPU, where a shared machine makes wall time swing by tens of percent, from wall seconds on CUDA;
``wall_ratios``, ``median_ratios``, ``flop_ratios``, ``stage2_flop_floors_vs_base`` and, when
counted, ``instruction_ratios`` always) and the ``generate`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/generate.py [--quick] [--reps N] [--device cpu|cuda] [--threads N]
                                  [--no-vc2-step] [--instructions] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from counts import callgrind_available, flops, instructions, op_counts, run_under_callgrind
from machine import cpu_model
from results_md import write_section
from tiny_models import randomise_adapters
from torch import nn

from tsm_video.generation import ExpertSwitcher, GenerateSettings, clip_seed, generate_clips
from tsm_video.models import build_backbone
from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS
from tsm_video.tsm import TimestepContext, inject, tsm_layers

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "base": None,
    "lora": ([1], "foster"),
    "foster": ([8], "foster"),
    "foster_recompute": ([8], "foster"),  # --no-keep-experts: W0 + ΔW computed at every switch
    "assemble": ([8, 1], "assemble"),  # the recipes' scales (configs/vc2_openvid70k.yaml, Tab. 11)
    "assemble_multi": ([8, 4, 2, 1], "assemble"),  # the multi-context override (Tab. 11 row 8 / 1,2,4)
}
VERSUS = tuple(v for v in VARIANTS if v != "base")
PER_CALL = ("lora", "foster", "assemble", "assemble_multi")  # vc2_step: one call, no switch to keep
STAGE2 = ("assemble", "assemble_multi")
GOALS = {"merged_vs_base": 1.02, "router_vs_base": 1.10}
PROMPT = "a corgi running on the beach at sunset"


def _add_experts(unet: nn.Module, variant: str, num_timesteps: int) -> TimestepContext:
    """Inject the variant's TSM layers into ``unet``; experts and router random and non-zero."""
    scales, mode = VARIANTS[variant]
    ctx = TimestepContext(num_timesteps)
    inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, alpha=4.0, mode=mode)
    randomise_adapters(unet, torch.Generator().manual_seed(1))
    return ctx


def _model(backbone: str, device: str, variant: str, dtype: torch.dtype | None):
    """Base weights from one seed; the variant's TSM layers with random non-zero parameters."""
    torch.manual_seed(0)
    model = build_backbone(backbone, device=device, dtype=dtype).eval().requires_grad_(False)
    if VARIANTS[variant] is None:
        return model, None
    model.tsm_ctx = _add_experts(model.unet, variant, model.schedule.num_timesteps)
    keep = variant != "foster_recompute"  # the others: generation's default, kept intervals
    return model, ExpertSwitcher(model, model.schedule.num_timesteps, keep_experts=keep)


def vc2_step(reps: int) -> dict:
    """CPU seconds, aten ops and FLOPs of one denoiser call of the full-width VC2 UNet per variant
    (4 frames of 8×8 latents, t = 501, experts merged for that interval). The variants share one
    copy of the base weights (merging never writes them)."""
    torch.manual_seed(0)
    base = VC2UNet.from_lvdm_config(VC2_UNET_PARAMS).eval().requires_grad_(False)
    shared = {id(t): t for t in (*base.parameters(), *base.buffers())}
    unets = {"base": (base, None)}
    for variant in PER_CALL:
        unet = copy.deepcopy(base, memo=dict(shared))
        ctx = _add_experts(unet, variant, 1000)
        ExpertSwitcher(unet, 1000)(0, 501)
        unets[variant] = (unet, ctx)
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([501])  # (B, C, F, h, w)
    context, fps = torch.randn(1, 77, VC2_UNET_PARAMS["context_dim"]), torch.tensor([28])
    times: dict[str, list[float]] = {v: [] for v in unets}
    counted: dict[str, dict] = {}
    order = list(unets)
    with torch.no_grad():
        for rep in range(reps + 1):  # the first round warms up and counts; rotating start as in main()
            for v in order[rep % len(order) :] + order[: rep % len(order)]:
                unet, ctx = unets[v]
                if ctx is not None:
                    ctx.set(t)
                start = time.process_time()
                unet(x, t, context, fps=fps)
                if rep:
                    times[v].append(time.process_time() - start)
                else:
                    call = functools.partial(unet, x, t, context, fps=fps)
                    counted[v] = {"aten_ops": sum(op_counts(call).values()), "flops": flops(call)}
                    if v in STAGE2:
                        counted[v]["context_expert_flops"] = _context_expert_flops(unet, call)
    best = {v: min(ts) for v, ts in times.items()}
    medians = {v: statistics.median(ts) for v, ts in times.items()}
    return {
        "cpu_seconds_per_call": best,
        "median_cpu_seconds_per_call": medians,
        "counts_per_call": counted,
        "reps": reps,
        "latent": [1, 4, 4, 8, 8],
        "tsm_layers": len(tsm_layers(unets["assemble"][0])),
        "ratios": {f"{v}_vs_base": best[v] / best["base"] for v in PER_CALL},
        "flop_ratios": {f"{v}_vs_base": counted[v]["flops"] / counted["base"]["flops"] for v in PER_CALL},
        "stage2_flop_floors_vs_base": {
            v: 1 + counted[v]["context_expert_flops"] / counted["base"]["flops"] for v in STAGE2
        },
    }


def _time_one(model, switcher, settings, device: str, autocast) -> tuple[float, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    _clip(model, switcher, settings, autocast)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _clip(model, switcher, settings, autocast) -> None:
    """One clip as ``tsm-video generate`` makes it (experts stay merged for the next clip)."""
    with autocast():
        generate_clips(model, [PROMPT], [clip_seed(0, PROMPT)], settings, switcher, keep_merged=True)


def _denoiser_counts(model, switcher, settings, device: str) -> dict:
    """aten ops and FLOPs of one denoiser call (batch 1, t = 501 with its interval's experts
    merged, the clip's latent shape), as the sampler makes it through ``predict_noise``."""
    if switcher is not None:
        switcher(0, 501)
    x = torch.randn(1, *model.latent_shape(settings), device=device)
    t, fps = torch.tensor([501], device=device), torch.tensor([settings.fps], device=device)
    cond = model.encode_text([PROMPT])

    def call():
        with torch.no_grad():
            model.predict_noise(x, t, cond, fps)

    counted = {"aten_ops": sum(op_counts(call).values()), "flops": flops(call)}
    if switcher is not None and any(layer.mode == "assemble" for _, layer in tsm_layers(model.unet)):
        counted["context_expert_flops"] = _context_expert_flops(model.unet, call)
    return counted


def _context_expert_flops(unet: nn.Module, call) -> int:
    """The least arithmetic stage 2 adds to the merged core in one ``call()``: per token of every
    TSM layer, ``A_ctx x`` (k·r·in), the gate logits ``FC x`` (k·in) and ``B_ctx h`` (k·r·out),
    2 FLOPs per multiply-add (what no implementation can skip: the gate depends on x)."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        k, r = len(layer.scales) - 1, layer.rank
        fan_in, fan_out = layer.base.in_features, layer.base.out_features
        tokens = inputs[0].numel() // fan_in
        total += 2 * tokens * (k * r * fan_in + k * fan_in + k * r * fan_out)

    handles = [layer.register_forward_hook(hook) for _, layer in tsm_layers(unet)]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return total


def _settings(args) -> tuple[str, torch.dtype | None, GenerateSettings]:
    if args.device == "cuda":  # VC2: 320×512, 16 frames, eta 1, CFG 12
        return "vc2", torch.bfloat16, GenerateSettings(steps=10 if args.quick else 50)
    settings = (
        GenerateSettings(height=32, width=32, num_frames=4, steps=4)
        if args.quick
        else GenerateSettings(height=64, width=64, num_frames=8, steps=10)
    )
    return "vc2-tiny", None, settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (< 1 min on 2 cores)")
    parser.add_argument("--reps", type=int, help="timed repetitions per variant (default 15)")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--no-vc2-step",
        action="store_true",
        help="skip the full-width VC2 UNet figure "
        "(one denoiser call per variant on CPU; ~6 GB of memory, a few minutes)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions of one "
        "clip per variant under valgrind's callgrind (CPU; after the timing; slow)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 avoids "
        "spinning GEMM barriers on a machine shared with other jobs",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile each variant's UNet in place")
    parser.add_argument("--instructions-child", type=Path, help=argparse.SUPPRESS)  # set by --instructions
    return parser


def _models(backbone: str, device: str, dtype) -> dict:
    return {v: _model(backbone, device, v, dtype) for v in VARIANTS}


def instructions_child(args, out: Path) -> None:
    """Inside callgrind: the same models and clip as the timed run; one warm-up clip each
    (uninstrumented), then the instructions of one clip per variant, written to ``out``."""
    backbone, dtype, settings = _settings(args)
    models = _models(backbone, "cpu", dtype)
    for model, switcher in models.values():  # warm-up, uninstrumented
        _clip(model, switcher, settings, contextlib.nullcontext)
    counts = {}
    for v, (model, switcher) in models.items():
        counts[v] = instructions(functools.partial(_clip, model, switcher, settings, contextlib.nullcontext))
    out.write_text(json.dumps(counts))


def _count_instructions(argv: list[str]) -> dict | None:
    """Instructions per clip and variant from a callgrind child (None when valgrind is missing)."""
    if not callgrind_available():
        print("--instructions: valgrind/callgrind_control not found; skipped")
        return None
    child = [a for a in argv if a not in ("--instructions", "--no-vc2-step")] + ["--no-vc2-step"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts = run_under_callgrind(Path(__file__), [*child, "--instructions-child"], Path(tmp), 3 * 3600)
    return {"instructions_per_clip": counts, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None, write: bool = True) -> dict:
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.instructions_child is not None:
        instructions_child(args, args.instructions_child)
        return {}
    reps = args.reps or 15
    backbone, dtype, settings = _settings(args)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if args.device == "cuda"
        else contextlib.nullcontext
    )
    load_start = os.getloadavg()[0]
    models = _models(backbone, args.device, dtype)
    counted = {
        v: _denoiser_counts(model, switcher, settings, args.device) for v, (model, switcher) in models.items()
    }
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
        for v in order[rep % len(order) :] + order[: rep % len(order)]:
            times[v].append(_time_one(*models[v], settings, args.device, autocast))
    for _, switcher in models.values():
        if switcher is not None:
            switcher.close()
    if args.compile:
        compile_info["graphs_after_timing"] = _graphs()
        compile_info["recompiled_during_timing"] = (
            compile_info["graphs_after_timing"] != compile_info["graphs_after_warmup"]
        )
    load_end = os.getloadavg()[0]
    results = {
        v: {
            "seconds_per_clip": min(w for w, _ in t),
            "median_seconds_per_clip": statistics.median(w for w, _ in t),
            "cpu_seconds_per_clip": min(c for _, c in t),
            "median_cpu_seconds_per_clip": statistics.median(c for _, c in t),
            "reps_wall": [round(w, 4) for w, _ in t],
            "reps_cpu": [round(c, 4) for _, c in t],
            **counted[v],
        }
        for v, t in times.items()
    }
    n_layers = len(tsm_layers(models["assemble"][0]))
    del models  # before the full-width UNet's ~6 GB
    step = vc2_step(2 if args.quick else 4) if args.device == "cpu" and not args.no_vc2_step else None
    instr = _count_instructions(argv) if args.instructions and args.device == "cpu" else None
    if instr is not None:
        for v, n in instr["instructions_per_clip"].items():
            results[v]["instructions_per_clip"] = n

    def versus_base(key: str) -> dict:
        return {f"{v}_vs_base": results[v][key] / results["base"][key] for v in VERSUS}

    def paired(column: int) -> dict:
        """Per round, variant / base of the same round (run back to back, so load drift cancels):
        the median and quartiles over rounds of ``times`` column 0 (wall) or 1 (CPU)."""
        out = {}
        for v in VERSUS:
            r = sorted(a[column] / b[column] for a, b in zip(times[v], times["base"]))
            q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
            out[f"{v}_vs_base"] = {"median": statistics.median(r), "q1": q[0], "q3": q[2]}
        return out

    wall_ratios, cpu_ratios = versus_base("seconds_per_clip"), versus_base("cpu_seconds_per_clip")
    floors = {v: 1 + results[v]["context_expert_flops"] / results["base"]["flops"] for v in STAGE2}
    median_key = "median_cpu_seconds_per_clip" if args.device == "cpu" else "median_seconds_per_clip"
    per = cpu_ratios if args.device == "cpu" else wall_ratios  # CPU: work done, not other jobs' load
    ratios = {
        "merged_vs_base": max(per["lora_vs_base"], per["foster_vs_base"]),
        "router_vs_base": per["assemble_vs_base"],  # the goal: stage 2 at the recipes' scales [8, 1]
        "router_multi_vs_base": per["assemble_multi_vs_base"],  # the [8, 4, 2, 1] override, no goal
        **per,
    }
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    record = {
        "benchmark": "generate",
        "quick": args.quick,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": device_name,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_start_end": [load_start, load_end],
        },
        "setup": {
            "backbone": backbone,
            "dtype": str(dtype or torch.float32),
            "settings": settings.to_dict(),
            "batch": 1,
            "reps": reps,
            "rank": 4,
            "targets": "vc2",
            "tsm_layers": n_layers,
        },
        "results": results,
        "ratios": ratios,
        "ratio_basis": "best process CPU seconds (1 thread)" if args.device == "cpu" else "best wall seconds",
        "wall_ratios": wall_ratios,
        "median_ratios": versus_base(median_key),
        "paired_ratios": paired(1 if args.device == "cpu" else 0),
        "flop_ratios": versus_base("flops"),
        "op_ratios": versus_base("aten_ops"),
        "stage2_flop_floors_vs_base": floors,
        "instruction_ratios": versus_base("instructions_per_clip") if instr is not None else None,
        "instructions_seconds": instr["seconds"] if instr is not None else None,
        "goals": GOALS,
        "goals_met": {k: ratios[k] <= GOALS[k] for k in GOALS},
        "vc2_step": step,
        "compile": compile_info,
    }
    if write:
        out = ROOT / "results" / f"{_tag(record).replace('-', '_')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        _write_section(record)
    shown = (
        "results",
        "ratios",
        "wall_ratios",
        "median_ratios",
        "paired_ratios",
        "flop_ratios",
        "instruction_ratios",
    )
    print(json.dumps({k: record[k] for k in (*shown, "vc2_step", "compile")}, indent=2))
    return record


def _tag(record: dict) -> str:
    """This run's RESULTS.md section / JSON name: full and --quick runs, eager or compiled, kept apart."""
    return "generate" + ("-quick" if record["quick"] else "") + ("-compile" if record["compile"] else "")


def _graphs() -> int:
    """Graphs dynamo has compiled so far in this process."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _floors(floors: dict) -> str:
    """Stage 2's FLOP floors, e.g. ``**1.031×** (8,1) and **1.064×** (8,4,2,1)``."""
    return " and ".join(f"**{floors[v]:.3f}×** ({','.join(map(str, VARIANTS[v][0]))})" for v in STAGE2)


def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    path = ROOT / "RESULTS.md"
    tag = _tag(record)
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    m, s, r = record["machine"], record["setup"], record["results"]
    compiled, step, st = record["compile"], record["vc2_step"], s["settings"]
    instr = record["instruction_ratios"] is not None
    names = {
        "base": "plain VC2",
        "lora": "vanilla LoRA, merged once",
        "foster": "TSM stage 1 (n=8), merged per interval (reached intervals kept)",
        "foster_recompute": "TSM stage 1 (n=8), W0 + ΔW recomputed at every switch",
        "assemble": "**TSM stage 2 (8,1), the recipes' scales**, core merged + context expert",
        "assemble_multi": "TSM stage 2 (8,4,2,1), multi-context override, core merged + context experts",
    }
    b = r["base"]
    rows = [
        f"| {names[v]} | {r[v]['seconds_per_clip']:.3f} / {r[v]['median_seconds_per_clip']:.3f} | "
        f"{r[v]['cpu_seconds_per_clip']:.3f} / {r[v]['median_cpu_seconds_per_clip']:.3f} | "
        + (f"{r[v]['instructions_per_clip'] / 1e9:.2f} | " if instr else "")
        + f"{r[v]['aten_ops']} | {r[v]['flops'] / 1e6:.1f} | "
        f"{r[v]['cpu_seconds_per_clip'] / b['cpu_seconds_per_clip']:.3f} | "
        + (f"{r[v]['instructions_per_clip'] / b['instructions_per_clip']:.3f} | " if instr else "")
        + f"{r[v]['flops'] / b['flops']:.3f} |"
        for v in VARIANTS
    ]

    def fmt(ratios: dict) -> str:
        return ", ".join(f"{k.removesuffix('_vs_base')} {v:.3f}" for k, v in ratios.items())

    section = "\n".join(
        [
            start,
            f"## {tag} — seconds per clip (`benchmarks/generate.py{' --compile' if compiled else ''}"
            f"{' --quick' if record['quick'] else ''}`)",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, device {m['device']}, torch "
            f"{m['torch']}. Backbone `{s['backbone']}` ({s['dtype']}, random weights), {st['height']}×"
            f"{st['width']}, {st['num_frames']} frames, DDIM {st['steps']} steps, eta {st['eta']}, CFG "
            f"{st['guidance_scale']}, batch 1, {s['tsm_layers']} TSM layers (rank 4). "
            f"{'Quick run. ' if record['quick'] else ''}{s['reps']} interleaved reps after a warm-up; "
            f"load average {m['load_average_start_end'][0]:.1f} → {m['load_average_start_end'][1]:.1f}. "
            "Seconds: best / median; aten ops and MFLOP: one denoiser call (batch 1, the clip's latents)"
            + ("; instructions: one clip under callgrind." if instr else "."),
            "",
            "| model | s / clip | CPU s / clip | "
            + ("G instr / clip | " if instr else "")
            + "aten ops / call | MFLOP / call | × base (CPU) | "
            + ("× base (instr) | " if instr else "")
            + "× base (FLOP) |",
            "| --- " * (7 + 2 * instr) + "|",
            *rows,
            "",
            f"Ratios ({record['ratio_basis']}): "
            + ", ".join(
                f"{k} **{record['ratios'][k]:.3f}** (goal ≤ {GOALS[k]:.2f}"
                f"{'' if record['goals_met'][k] else ', not met'})"
                for k in GOALS
            )
            + "; stage 2 with the multi-context override (8,4,2,1) "
            f"{record['ratios']['router_multi_vs_base']:.3f} "
            "(no goal). The stage-2 goal is judged on the recipes' scales [8, 1]: the sampling a user runs "
            "(every shipped config, e.g. tsm_video/configs/vc2_openvid70k.yaml; paper Tab. 11 and Sec. 4.4: "
            "one scale-1 context expert is enough); [8, 4, 2, 1] is a `tsm.scales` override. "
            f"Medians: {fmt(record['median_ratios'])}; paired per round (median [quartiles] of variant / "
            "base in the same round): "
            + ", ".join(
                f"{k.removesuffix('_vs_base')} {p['median']:.3f} [{p['q1']:.3f}, {p['q3']:.3f}]"
                for k, p in record["paired_ratios"].items()
            )
            + f"; wall: {fmt(record['wall_ratios'])}; "
            + (f"instructions: {fmt(record['instruction_ratios'])}; " if instr else "")
            + f"FLOPs: {fmt(record['flop_ratios'])}. "
            "Merged LoRA and stage 1 dispatch exactly the base's aten ops in the UNet "
            "(tests/tsm/test_merged_cost.py; the 2 more per call are the context's interval check); "
            "stage 1 switches intervals at every step at these step counts: with generation's default "
            "each reached interval's merged weights are kept, so from the second clip on a switch is "
            "one copy of them (foster_recompute, `--no-keep-experts`: one bmm, add and copy per weight "
            "shape at every switch); the rest of their distance from 1.000 is this run's noise. Stage 2 "
            "cannot merge its context experts (the gate FC(x) + Emb(t) depends on x): the arithmetic "
            "they need at the least (A_ctx x, FC x and B_ctx h per token of its "
            f"{s['tsm_layers']} layers) puts stage 2 at {_floors(record['stage2_flop_floors_vs_base'])} "
            "the base's FLOPs with these shapes, before any overhead (the implementations: FLOP ratios "
            "above).",
            *(
                []
                if not compiled
                else [
                    "",
                    "Compiled UNets (`torch.compile`): warm-up incl. compiling "
                    f"{compiled['warmup_seconds']:.0f} s; {compiled['graphs_after_warmup']} graphs after the "
                    f"warm-up, {compiled['graphs_after_timing']} after the timed clips "
                    "(recompiled while switching experts: "
                    f"{'yes' if compiled['recompiled_during_timing'] else 'no'}).",
                ]
            ),
            *(
                []
                if step is None
                else [
                    "",
                    "Full-width VC2 UNet, one denoiser call on CPU "
                    f"({step['tsm_layers']} TSM layers, latents {step['latent']}, t = 501 with the "
                    f"experts of its interval merged; best of {step['reps']} CPU seconds): "
                    + ", ".join(
                        f"{v} {sec:.2f} s ({step['counts_per_call'][v]['aten_ops']} ops, "
                        f"{step['counts_per_call'][v]['flops'] / 1e9:.1f} GFLOP)"
                        for v, sec in step["cpu_seconds_per_call"].items()
                    )
                    + "; "
                    + ", ".join(f"{k} **{v:.3f}**" for k, v in step["ratios"].items())
                    + f"; FLOPs: {fmt(step['flop_ratios'])} (stage 2's floors: "
                    f"{_floors(step['stage2_flop_floors_vs_base'])}).",
                ]
            ),
            end,
        ]
    )
    write_section(path, start, end, section)


if __name__ == "__main__":
    main()
