"""What an interval switch and a denoiser call cost on vc2-tiny, in instructions (callgrind) and
aten ops: load-independent, so a change of a few percent shows on a shared machine.

Side by side in one process: the vc2-tiny UNet (base weights from one seed, zero-initialised
outputs filled so the experts matter) with TSM layers on the ``vc2`` targets (60 ``to_k``/``to_v``
layers, rank 4, random experts and router): stage 1 (scale 8), stage 2 at the recipes' scales
[8, 1] and at [8, 4, 2, 1]. Per variant:

- **switch**: one interval switch of the whole model, averaged over a cycle through the 8
  intervals, three ways: ``per_layer`` (``layer.merge(i)`` on every layer, the path a single layer
  takes), ``switcher`` (:class:`~tsm_video.generation.ExpertSwitcher` with ``keep_experts=False``:
  ``W0 + ΔW_i`` computed at every switch) and ``switcher_kept`` (its default, what sampling
  calls: every interval's merged weights kept after the first visit, a switch copies them);
- **call**: one denoiser call (the CFG batch of 2, ``ctx.set`` + UNet forward, t = 501 with its
  interval merged) at the latent size of ``benchmarks/generate.py --quick`` (4 frames of 4×4)
  and of its full run (8 frames of 8×8); the base UNet's call alongside.

Instructions: :func:`counts.instructions` in a child process under valgrind's callgrind (one
warm-up of each region first); aten ops: :func:`counts.op_counts`. Writes
``benchmarks/results/switch_cost.json`` and the ``switch_cost`` section of RESULTS.md.

    python benchmarks/switch_cost.py [--quick]    # ~11 min (--quick ~4) on one core (valgrind)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from counts import callgrind_available, instructions, op_counts, run_under_callgrind
from machine import cpu_model
from results_md import write_section
from tiny_models import randomise_adapters, tiny_vc2_unet

from tsm_video.generation import ExpertSwitcher
from tsm_video.models.vc2.configs import VC2_TINY_ARCH
from tsm_video.tsm import TimestepContext, inject, tsm_layers

ROOT = Path(__file__).resolve().parent
T = 1000
VARIANTS = {
    "foster": ([8], "foster"),
    "assemble": ([8, 1], "assemble"),
    "assemble_multi": ([8, 4, 2, 1], "assemble"),
}
LATENTS = {"quick": (4, 4, 4), "full": (8, 8, 8)}  # (frames, h, w) of generate.py's two sizes
CYCLE = [1, 2, 3, 4, 5, 6, 7, 0]  # every switch moves to another interval


def _models() -> dict:
    base = tiny_vc2_unet()
    models = {"base": (base, None, None)}
    gen = torch.Generator().manual_seed(1)
    for name, (scales, mode) in VARIANTS.items():
        unet, ctx = copy.deepcopy(base), TimestepContext(T)
        inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, mode=mode)
        randomise_adapters(unet, gen)
        models[name] = (unet, ctx, ExpertSwitcher(unet, T, keep_experts=False))
    return models


def _per_layer(unet) -> None:
    layers = [layer for _, layer in tsm_layers(unet)]
    for i in CYCLE:
        for layer in layers:
            layer.merge(i)


def _switcher(switcher) -> None:
    for step, i in enumerate(CYCLE):
        switcher(step, i * T // 8 + 1)


def _call(unet, ctx, latent):
    frames, h, w = latent
    x = torch.randn(2, 4, frames, h, w, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([501, 501])
    context = torch.randn(
        2, 77, VC2_TINY_ARCH["unet"]["context_dim"], generator=torch.Generator().manual_seed(1)
    )
    fps = torch.tensor([8, 8])

    def call() -> None:
        if ctx is not None:
            ctx.set(t)
        unet(x, t, context, fps=fps)

    return call


def measure(count, sizes: list[str]) -> dict:
    """``count(fn)`` → a number per region (instructions under callgrind, or aten ops); denoiser
    calls at the latent ``sizes`` (keys of :data:`LATENTS`)."""
    models = _models()
    out: dict = {"switch": {}, "call": {}}
    with torch.no_grad():
        for name, (unet, _, switcher) in models.items():
            if switcher is None:
                continue
            for how, fn in (
                ("per_layer", partial(_per_layer, unet)),
                ("switcher", partial(_switcher, switcher)),
                ("switcher_kept", partial(_switcher, ExpertSwitcher(unet, T))),
            ):
                fn()  # warm-up: first merges, plans, allocator
                out["switch"].setdefault(name, {})[how] = count(fn) / len(CYCLE)
        for name, (unet, ctx, switcher) in models.items():
            if switcher is not None:
                switcher(0, 501)
            for size in sizes:
                call = _call(unet, ctx, LATENTS[size])
                call()
                out["call"].setdefault(name, {})[size] = count(call)
    return out


def _child(out: Path, sizes: list[str]) -> None:
    torch.set_num_threads(1)
    out.write_text(json.dumps(measure(instructions, sizes)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="denoiser calls at the quick size only (~4 min)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = ["quick"] if args.quick else list(LATENTS)
    if args.child is not None:
        _child(args.child, sizes)
        return {}
    if not callgrind_available():
        raise SystemExit("switch_cost: needs valgrind and callgrind_control")
    torch.set_num_threads(1)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    ops = measure(lambda fn: sum(op_counts(fn).values()), sizes)
    with tempfile.TemporaryDirectory() as tmp:
        child = ["--quick"] * args.quick + ["--child"]
        instr = run_under_callgrind(Path(__file__), child, Path(tmp), 3600)
    record = {
        "benchmark": "switch_cost",
        "machine": {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1},
        "load_average_start_end": [load_start, os.getloadavg()[0]],
        "seconds": time.perf_counter() - start,
        "call_sizes": sizes,
        "instructions": instr,
        "aten_ops": ops,
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "switch_cost.json").write_text(json.dumps(record, indent=2) + "\n")
    write_section(ROOT / "RESULTS.md", *_section(record))
    print(_section(record)[2])
    return record


def _section(record: dict) -> tuple[str, str, str]:
    start, end = "<!-- switch_cost:start -->", "<!-- switch_cost:end -->"
    instr, ops = record["instructions"], record["aten_ops"]
    lines = [
        start,
        "## switch_cost — instructions and aten ops of an interval switch and a denoiser call "
        "(`benchmarks/switch_cost.py`)",
        "",
        "vc2-tiny UNet, 60 TSM layers (`vc2` targets, rank 4), 1 thread, callgrind; "
        f"CPU {record['machine']['cpu']}, "
        f"torch {record['machine']['torch']}, load {record['load_average_start_end'][0]:.2f} → "
        f"{record['load_average_start_end'][1]:.2f} (instruction counts do not depend on it).",
        "",
        "| variant | switch, per layer (M instr / ops) | switch, ExpertSwitcher (M instr / ops) "
        "| switch, kept intervals (M instr / ops) | call quick (M instr / ops) | call full (M instr / ops) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("base", *VARIANTS):
        sw = instr["switch"].get(name)
        cells = [
            "–" if sw is None else f"{sw[how] / 1e6:.3f} / {ops['switch'][name][how]:.0f}"
            for how in ("per_layer", "switcher", "switcher_kept")
        ]
        calls = [
            f"{instr['call'][name][s] / 1e6:.2f} / {ops['call'][name][s]}" if s in ops["call"][name] else "–"
            for s in LATENTS
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(calls)} |")
    base = instr["call"]["base"]
    ratios = ", ".join(
        f"{name} " + " / ".join(f"{instr['call'][name][s] / base[s]:.3f}" for s in base) for name in VARIANTS
    )
    lines += ["", f"Call instructions vs base ({' / '.join(base)}): {ratios}.", end]
    return start, end, "\n".join(lines)


if __name__ == "__main__":
    main()
