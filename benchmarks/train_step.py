"""One optimizer step of a small VC2-architecture UNet: vanilla LoRA vs TSM fostering vs assembling.

Side by side in one run, same model, batch and timesteps: forward + backward + AdamW step over
the stage's trainable set (gradient checkpointing off), with

- ``lora``: vanilla LoRA (scale 1) on the ``vc2`` preset (to_k/to_v of all attention);
- ``foster``: TSM stage 1 at scale 8, timesteps stratified so one batch mixes 8 intervals;
- ``assemble``: TSM stage 2 with scales 8,4,2,1 (experts frozen, routers train).

All variants are built and warmed up first, then timed in interleaved rounds (median per
variant). Memory: on a GPU, the step's peak allocation above the resident model; on the CPU,
the bytes autograd saves for backward + gradients + AdamW state of the trainable set. Writes
``benchmarks/results/train_step.json`` (``ratios``: ``foster_vs_lora``, ``assemble_vs_lora``,
time ratios, lower is better; goals ≤ 1.10 and ≤ 1.30) and the section of ``benchmarks/RESULTS.md``.

    python benchmarks/train_step.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from results_md import write_section

from tsm_video.diffusion import VC2Schedule
from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS
from tsm_video.tsm import IntervalSchedule, TimestepContext, configure_stage, inject

ROOT = Path(__file__).resolve().parent
VARIANTS = {"lora": ("foster", [1]), "foster": ("foster", [8]), "assemble": ("assemble", [8, 4, 2, 1])}
PARAMS = {
    **VC2_UNET_PARAMS,
    "model_channels": 64,
    "num_head_channels": 32,
    "context_dim": 256,
    "temporal_length": 8,
    "use_checkpoint": False,
}


def _setup(variant: str, device: str, batch: int, frames: int, size: int):
    torch.manual_seed(0)
    unet = VC2UNet(**PARAMS, device=device)
    ctx = TimestepContext(1000)
    mode, scales = VARIANTS[variant]
    inject(unet, "vc2", ctx=ctx, scales=scales, rank=4, alpha=4.0, mode=mode)
    configure_stage(unet, "assemble" if mode == "assemble" else "foster")
    with torch.no_grad():  # experts off zero so every branch computes real values
        for name, p in unet.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.01)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, 4, frames, size, size, generator=g).to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    t = IntervalSchedule(1000).sample_stratified(batch, 8, generator=g).to(device)  # mixed intervals
    context = torch.randn(batch, 77, PARAMS["context_dim"], generator=g).to(device)
    fps = torch.full((batch,), 8, dtype=torch.long, device=device)
    x_t = VC2Schedule().q_sample(x0, t, noise)

    def step() -> None:
        ctx.set(t)
        loss = (unet(x_t, t, context, fps=fps) - noise).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, params, opt


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _saved_bytes(step) -> int:
    """Bytes of every tensor autograd saves for backward during one step (the activation memory)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def _memory_mib(step, params, opt, device: str) -> float:
    """CUDA: peak allocation of one step above the resident model; CPU: activations saved for
    backward + trainable parameters' gradients + AdamW state (what the step adds to the model)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    state = sum(
        v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v)
    )
    grads = sum(p.numel() * p.element_size() for p in params)
    return (_saved_bytes(step) + state + grads) / 2**20


def measure_all(device: str, reps: int, batch: int, frames: int, size: int) -> dict:
    """Build every variant, warm each up, then time them in interleaved rounds (drift hits all alike)."""
    setups = {v: _setup(v, device, batch, frames, size) for v in VARIANTS}
    results = {}
    for v, (step, params, opt) in setups.items():
        step()  # warm-up (allocates optimizer state, primes kernels)
        _sync(device)
        results[v] = {
            "times": [],
            "peak_mib": _memory_mib(step, params, opt, device),
            "trainable_params": sum(p.numel() for p in params),
        }
    for _ in range(reps):
        for v, (step, _, _) in setups.items():
            start = time.perf_counter()
            step()
            _sync(device)
            results[v]["times"].append(time.perf_counter() - start)
    for r in results.values():
        r["seconds_per_step"] = statistics.median(r["times"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 minute on 2 CPU cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "train_step.json"))
    args = parser.parse_args()
    reps = 3 if args.quick else 7
    frames, size = (8, 16) if args.quick else (8, 32)  # --quick: 16x16 latents (< 1 minute on 2 cores)
    results = measure_all(args.device, reps, args.batch, frames, size)
    for variant, r in results.items():
        print(
            f"{variant:>9}: {r['seconds_per_step'] * 1e3:8.1f} ms/step, memory {r['peak_mib']:8.1f} MiB, "
            f"{r['trainable_params']:,} trainable"
        )
    lora = results["lora"]
    ratios = {
        "foster_vs_lora": results["foster"]["seconds_per_step"] / lora["seconds_per_step"],
        "assemble_vs_lora": results["assemble"]["seconds_per_step"] / lora["seconds_per_step"],
    }
    memory_ratios = {
        k.replace("_vs_", "_mem_vs_"): results[k.split("_")[0]]["peak_mib"] / max(lora["peak_mib"], 1e-9)
        for k in ratios
    }
    machine = {
        "device": args.device,
        "name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    setup = {
        "unet": {
            k: PARAMS[k]
            for k in ("model_channels", "channel_mult", "num_head_channels", "context_dim", "temporal_length")
        },
        "batch": args.batch,
        "latents": [4, frames, size, size],
        "rank": 4,
        "reps": reps,
        "gradient_checkpointing": False,
        "timesteps": "stratified over 8 intervals (mixed t)",
    }
    record = {
        "benchmark": "train_step",
        "ratios": ratios,
        "memory_ratios": memory_ratios,
        "results": results,
        "setup": setup,
        "machine": machine,
        "quick": args.quick,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps({"ratios": ratios, "memory_ratios": memory_ratios}, indent=1))
    _write_section(record)


def _write_section(record: dict) -> None:
    """Replace this benchmark's section of benchmarks/RESULTS.md (other sections kept)."""
    path = ROOT / "RESULTS.md"
    start, end = "<!-- train_step:start -->", "<!-- train_step:end -->"
    m, r = record["machine"], record["results"]
    rows = [
        f"| {v} | {r[v]['seconds_per_step'] * 1e3:.1f} | {r[v]['peak_mib']:.1f} | "
        f"{r[v]['trainable_params']:,} |"
        for v in VARIANTS
    ]
    section = "\n".join(
        [
            start,
            "## train_step — one optimizer step, small VC2 UNet (`benchmarks/train_step.py`)",
            "",
            f"Machine: {m['device']} ({m['name']}), {m['threads']} threads, torch {m['torch']}"
            f"{' (--quick)' if record['quick'] else ''}. Setup: model_channels 64, channel_mult "
            f"{record['setup']['unet']['channel_mult']}, batch {record['setup']['batch']}, latents "
            f"{record['setup']['latents']}, rank 4, mixed timesteps, no gradient checkpointing.",
            "",
            "| variant | ms / step | memory MiB | trainable params |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"Ratios (time): foster_vs_lora **{record['ratios']['foster_vs_lora']:.3f}** (goal ≤ 1.10), "
            f"assemble_vs_lora **{record['ratios']['assemble_vs_lora']:.3f}** (goal ≤ 1.30).",
            end,
        ]
    )
    write_section(path, start, end, section)


if __name__ == "__main__":
    main()
