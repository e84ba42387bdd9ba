"""Toy post-pretraining study: vanilla LoRA vs TimeStep Master at equal cost (Tab. 8, Sec. 4.4).

A ``vc2-tiny`` model (the VC2 architecture at toy widths, with the demo's trained tiny VAE) is
pretrained once on synthetic OpenVid-format video of domain A (``data_tools.synth``: flat
shapes) and cached; every method then post-pretrains it on the larger, more varied domain B
(more colours and counts, jittered speeds and sizes, striped fills, textured backgrounds, a
panning camera), through the public trainer (``tsm_video.train.runner.run_training``):

================  ============================================================  ===========
method            what trains                                                   cost (steps)
================  ============================================================  ===========
``lora``          vanilla LoRA, rank r, S steps                                 S
``lora_nS``       vanilla LoRA, rank r, n·S steps (equal compute to TSM-1)      n·S
``lora_rn``       vanilla LoRA, rank n·r, S steps (equal parameters to TSM-1)   S
``tsm1``          TSM stage 1: n experts, each S steps on its own interval      n·S
``tsm2``          TSM stage 2 [n, 1]: ``tsm1`` + ``lora`` experts, S router     n·S + 2S
``moe``           ablation: symmetric gating over the same experts, S steps     n·S + 2S
``router_x``      ablation: router reads x only (Emb(t) frozen at 0), S steps   n·S + 2S
``router_t``      ablation: router reads t only (FC(x) frozen at 0), S steps    n·S + 2S
================  ============================================================  ===========

Metrics, per method and seed: held-out ε-MSE in each of the n timestep intervals (the same
held-out domain-B clips, timesteps and noise for every method: ``interval_eps_mse`` seed 0);
light EvalCrafter-style generation scores on held-out prompts against the synthetic ground
truth (colour, count, motion direction, amplitude; ``tsm_video.demo.scores``; same initial
noise for every method); training wall time. Statistics: mean ± std over seeds and the paired
difference to ``lora`` with a 95 % t confidence interval.

Run: ``python benchmarks/study_post_pretraining.py`` (full: ≤ 90 min on a quiet 2-core
machine), ``--quick`` (same code, fewer steps and seeds, ≤ 10 min). Results:
``benchmarks/results/study_post_pretraining.json`` (rewritten after every finished method, so
an interrupted run leaves its completed part, marked ``"full": false``), plots beside it and a
section of ``benchmarks/RESULTS.md``. The work folder (``--workdir``, default
``benchmarks/.cache/study_post_pretraining``) caches the data and the pretrained base.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.results_md import write_section  # noqa: E402
from data_tools.synth import make_synthetic_dataset  # noqa: E402
from tsm_video.config import RunConfig, parse_config  # noqa: E402
from tsm_video.demo.outdir import claim_output_dir, record_entries  # noqa: E402
from tsm_video.demo.pipeline import heldout_batches  # noqa: E402
from tsm_video.demo.scores import SCORE_NAMES, light_scores  # noqa: E402
from tsm_video.demo.vae import VAE_WEIGHTS, compose_checkpoint  # noqa: E402
from tsm_video.train.evaluate import interval_eps_mse  # noqa: E402
from tsm_video.train.runner import run_training  # noqa: E402
from tsm_video.train.stages import load_trained, plan_stages, stage1_run  # noqa: E402
from tsm_video.train.validation import sample_clips  # noqa: E402

__all__ = [
    "StudySettings",
    "FULL",
    "QUICK",
    "SMOKE",
    "ORDER",
    "run_study",
    "paired",
    "paired_stats",
    "merge_documents",
    "main",
]

COMMAND = "study_post_pretraining"
RESULTS = ROOT / "benchmarks" / "results" / "study_post_pretraining.json"
DEFAULT_WORKDIR = ROOT / "benchmarks" / ".cache" / "study_post_pretraining"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
MD_START, MD_END = "<!-- study_post_pretraining:start -->", "<!-- study_post_pretraining:end -->"


@dataclass(frozen=True)
class StudySettings:
    """Sizes of one study configuration (``FULL``, ``QUICK``, ``SMOKE`` differ only here)."""

    name: str
    seeds: tuple[int, ...]
    steps: int  # S
    base_steps: int  # domain-A pretraining of the base (cached)
    n: int = 8  # TSM-1 intervals (core scale of TSM-2)
    rank: int = 4
    size: int = 32  # frame side (pixels)
    num_frames: int = 8
    batch_size: int = 4
    lr: float = 1e-3
    base_lr: float = 1e-3
    videos_a: int = 96  # domain-A training videos (pretraining)
    videos_b: int = 192  # domain-B training videos (post-pretraining)
    videos_heldout: int = 32  # held-out domain-B videos (ε-MSE)
    prompts: int = 8  # held-out prompts for generation scores
    ddim_steps: int = 20
    guidance_scale: float = 5.0
    domain: str = "b"  # "shifted": the domain-adaptation variant

    def key(self, *fields: str) -> str:
        """A short hash of the named fields (cache keys of data and base)."""
        blob = json.dumps({f: getattr(self, f) for f in fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


FULL = StudySettings("full", seeds=(0, 1, 2), steps=60, base_steps=300, videos_heldout=24, prompts=4)
QUICK = StudySettings(
    "quick", seeds=(0, 1), steps=12, base_steps=150, videos_b=64, videos_heldout=16, prompts=4
)
SMOKE = StudySettings(
    "smoke",
    seeds=(0,),
    steps=1,
    base_steps=1,
    n=2,
    num_frames=4,
    batch_size=2,
    videos_a=2,
    videos_b=2,
    videos_heldout=2,
    prompts=1,
    ddim_steps=2,
)


# --------------------------------------------------------------------------------------
# configs: every method is one or more public `run_training` calls
# --------------------------------------------------------------------------------------


def _config(s: StudySettings, out: Path, name: str, seed: int, base: Path, data: Path, **tsm) -> RunConfig:
    """A run config of the study: ``vc2-tiny`` from ``base``, data ``data`` (a synth CSV)."""
    raw = {
        "run": {"name": name, "output_dir": str(out), "seed": seed},
        "model": {
            "backbone": "vc2-tiny",
            "checkpoint": str(base),
            "mixed_precision": "no",
            "gradient_checkpointing": False,
        },
        "tsm": {"scales": [s.n, 1], "rank": s.rank, "text_lora": {"enabled": False}, **tsm},
        "data": {
            "csv": str(data),
            "videos": str(data.parent / "videos"),
            "num_frames": s.num_frames,
            "height": s.size,
            "width": s.size,
            "num_workers": 0,
            "caption_dropout": 0.1,
        },
        "train": {
            "stages": ["foster", "assemble"] if tsm.get("scales", [s.n, 1]) != [1] else ["foster"],
            "steps": {"base": s.base_steps, "foster": s.steps, "assemble": s.steps},
            "foster_schedule": "per_expert",  # TSM-1: each expert S steps alone (the cost accounting)
            "lr": s.lr,
            "base_lr": s.base_lr,
            "global_batch_size": s.batch_size,
            "per_device_batch_size": s.batch_size,
            "warmup_steps": 0,
            "checkpoint_every": 1_000_000,
            "log_every": 50,
            "validation": {"every": 0},
        },
        "generate": {
            "height": s.size,
            "width": s.size,
            "num_frames": s.num_frames,
            "steps": s.ddim_steps,
            "guidance_scale": s.guidance_scale,
        },
    }
    return parse_config(raw)


def _train(cfg: RunConfig, stage: str, scale: int | None, log: Callable[[str], None]) -> tuple[float, int]:
    """One public trainer call → (seconds, steps)."""
    results = run_training(cfg, stage=stage, scale=scale, print_fn=log)
    return sum(r.seconds for r in results), sum(r.steps for r in results)


def _link_experts(src: RunConfig, dst: RunConfig, scales: list[int]) -> None:
    """Reuse ``src``'s stage-1 folders in ``dst`` (symlinks): an ablation's experts are TSM-2's."""
    dst.run_dir.mkdir(parents=True, exist_ok=True)
    for n in scales:
        link = dst.run_dir / f"foster_s{n}"
        if not link.exists():
            link.symlink_to(src.run_dir / f"foster_s{n}", target_is_directory=True)


#: Training order: every seed of a method before the next method, cheapest information first
#: (an interrupted run still has all seeds of LoRA, TSM-1 and TSM-2); TSM-2 and the ablations
#: reuse the seed's ``lora`` (scale-1) and ``tsm1`` (scale-n) experts.
ORDER = ("lora", "tsm1", "tsm2", "moe", "router_x", "router_t", "lora_rn", "lora_nS")


def method_plan(
    s: StudySettings, out: Path, seed: int, base: Path, data: Path
) -> dict[str, tuple[RunConfig, str, int | None, int]]:
    """``{method: (config, stage, scale, cost in steps)}`` of one seed (run folders under ``out``)."""
    n, S = s.n, s.steps

    def cfg(name: str, foster_steps: int = S, **tsm) -> RunConfig:
        c = _config(s, out, name, seed, base, data, **tsm)
        return replace(c, train=replace(c.train, steps=replace(c.train.steps, foster=foster_steps)))

    tsm = cfg("tsm")  # TSM-1 is per_expert (the config default): each of the n experts S steps alone
    stage2 = n * S + 2 * S  # TSM-1 + the scale-1 context expert (S) + S router steps
    return {
        "lora": (tsm, "foster", 1, S),
        "tsm1": (tsm, "foster", n, n * S),
        "tsm2": (tsm, "assemble", None, stage2),
        "moe": (cfg("moe", router="symmetric"), "assemble", None, stage2),
        "router_x": (cfg("router_x", router_input="x"), "assemble", None, stage2),
        "router_t": (cfg("router_t", router_input="t"), "assemble", None, stage2),
        "lora_rn": (cfg("lora_rn", scales=[1], rank=n * s.rank), "foster", 1, S),
        "lora_nS": (cfg("lora_nS", n * S, scales=[1]), "foster", 1, n * S),
    }


def train_method(
    plan: dict[str, tuple[RunConfig, str, int | None, int]], method: str, log: Callable[[str], None]
) -> tuple[float, int]:
    """Train ``method`` of one seed's plan (ablations link TSM-2's experts) → (seconds, steps)."""
    cfg, stage, scale, _ = plan[method]
    if stage == "assemble" and method != "tsm2":
        _link_experts(plan["tsm2"][0], cfg, cfg.tsm.scales)
    return _train(cfg, stage, scale, log)


# --------------------------------------------------------------------------------------
# data, base, evaluation
# --------------------------------------------------------------------------------------


def prepare_data(s: StudySettings, work: Path) -> dict[str, Path]:
    """Domain-A, domain-B and held-out CSVs (cached by their settings)."""
    specs = {
        "a": ("a", s.videos_a, 10),
        "b": (s.domain, s.videos_b, 20),
        "heldout": (s.domain, s.videos_heldout, 30),
    }
    csvs = {}
    for part, (domain, count, seed) in specs.items():
        folder = work / f"data_{part}_{domain}_{count}_{s.size}_{s.num_frames}"
        csv = folder / "synthetic.csv"
        if not (folder / "ground_truth.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted earlier write of ours
            make_synthetic_dataset(
                folder,
                num_videos=count,
                seed=seed,
                size=(s.size, s.size),
                num_frames=s.num_frames,  # a training clip is the whole video: its full motion
                fps=8.0,
                domain=domain,
            )
        csvs[part] = csv
    return csvs


def pretrain_base(
    s: StudySettings, work: Path, data_a: Path, log: Callable[[str], None]
) -> tuple[Path, float]:
    """The domain-A base (``base`` stage from the tiny VAE's checkpoint), cached → (path, seconds)."""
    key = s.key("base_steps", "base_lr", "batch_size", "size", "num_frames", "videos_a")
    folder = work / f"base_{key}"
    cfg = _config(s, folder / "runs", "base", 0, folder / "init.safetensors", data_a)
    cfg = replace(cfg, train=replace(cfg.train, stages=["base"]))
    out = plan_stages(cfg)[0].output
    if out.is_file():
        log(f"[study] reusing the cached base {out}")
        return out, json.loads((folder / "seconds.json").read_text())["seconds"]
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished base of ours
    compose_checkpoint(folder / "init.safetensors", seed=0)
    seconds, _ = _train(cfg, "base", None, log)
    (folder / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def heldout_prompts(s: StudySettings, csv: Path) -> list[dict]:
    """The first ``s.prompts`` held-out ground-truth scenes (caption + attributes)."""
    truth = json.loads((csv.parent / "ground_truth.json").read_text())
    return [truth[name] for name in sorted(truth)[: s.prompts]]


def evaluate(model: torch.nn.Module, s: StudySettings, batches: list[dict], scenes: list[dict]) -> dict:
    """Held-out ε-MSE per interval (+ mean) and light generation scores of one trained model."""
    per_interval = interval_eps_mse(model, batches, s.n, seed=0)
    clips = sample_clips(
        model,
        [sc["caption"] for sc in scenes],
        (s.num_frames, s.size, s.size),
        s.ddim_steps,
        s.guidance_scale,
        8,
        seed=1000,
    )
    scores = light_scores(clips, scenes)
    return {
        "heldout_mse": float(np.mean(per_interval)),
        "heldout_mse_per_interval": per_interval,
        **{f"gen_{k}": v["value"] for k, v in scores.items()},
        "gen_n": {k: v["n"] for k, v in scores.items()},
    }


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------

# two-sided 95 % Student t quantiles t_{0.975, df}, df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def paired_stats(values: list[float], reference: list[float]) -> dict:
    """Mean ± std of ``values`` and the paired difference ``values − reference`` with a 95 % t CI.

    With one seed std and CI are NaN. Returns ``{"mean", "std", "diff_mean", "diff_std",
    "diff_ci95": [lo, hi], "n"}``.
    """
    v, r = np.asarray(values, float), np.asarray(reference, float)
    if v.shape != r.shape:
        raise ValueError(f"paired statistics need equal seeds: {v.shape} vs {r.shape}")
    d, k = v - r, len(v)
    std = float(v.std(ddof=1)) if k > 1 else math.nan
    dstd = float(d.std(ddof=1)) if k > 1 else math.nan
    half = _T975[min(k - 1, len(_T975)) - 1] * dstd / math.sqrt(k) if k > 1 else math.nan
    mean_d = float(d.mean())
    return {"mean": float(v.mean()), "std": std, "diff_mean": mean_d, "diff_std": dstd,
            "diff_ci95": [mean_d - half, mean_d + half], "n": k}  # fmt: skip


def paired(methods: dict[str, dict], a: str, b: str, metric: str) -> tuple[list[float], list[float]]:
    """``metric`` of methods ``a`` and ``b`` on the seeds both finished, in the same seed order."""
    ra, rb = methods.get(a, {}), methods.get(b, {})
    if metric not in ra or metric not in rb:
        return [], []
    by_seed = dict(zip(rb["seed"], rb[metric]))
    pairs = [(v, by_seed[seed]) for seed, v in zip(ra["seed"], ra[metric]) if seed in by_seed]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def summarise(methods: dict[str, dict]) -> dict[str, dict]:
    """Per method and scalar metric: :func:`paired_stats` against ``lora`` over the seeds both have."""
    summary = {}
    for method in methods:
        summary[method] = {}
        for metric in ("heldout_mse", *(f"gen_{k}" for k in SCORE_NAMES), "train_seconds"):
            values, reference = paired(methods, method, "lora", metric)
            if values:
                summary[method][metric] = paired_stats(values, reference)
    return summary


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def _vae_identity() -> dict:
    """The tiny VAE the base started from: file sha256 and the recipe stored in its metadata."""
    from safetensors import safe_open

    meta = safe_open(str(VAE_WEIGHTS), "pt").metadata() or {}
    digest = hashlib.sha256(VAE_WEIGHTS.read_bytes()).hexdigest()
    return {
        "sha256": digest,
        "recipe": json.loads(meta.get("recipe", "{}")),
        "stats": json.loads(meta.get("stats", "{}")),
    }


def _atomic_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)


def _machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }


def run_study(
    s: StudySettings,
    workdir: Path,
    results: Path,
    log: Callable[[str], None] = print,
    is_full: bool = False,
) -> dict:
    """Run configuration ``s`` and write ``results`` (JSON) after every finished method.

    ``"full"`` in the JSON is true only when ``is_full`` and every method of every seed finished.
    """
    start = time.perf_counter()
    work = claim_output_dir(workdir, COMMAND, clean=False)
    runs = work / f"runs_{s.name}_seeds_{'-'.join(map(str, s.seeds))}"  # own folder per parallel process
    record_entries(work, COMMAND, [runs.name])
    shutil.rmtree(runs, ignore_errors=True)  # this configuration's previous runs (ours)
    machine_start = _machine()
    t0 = time.perf_counter()
    csvs = prepare_data(s, work)
    data_seconds = time.perf_counter() - t0
    base, base_seconds = pretrain_base(s, work, csvs["a"], log)
    record_entries(work, COMMAND, [p.name for p in work.iterdir() if p.name != ".tsm-video-output.json"])
    batches = heldout_batches(csvs["heldout"], s.num_frames, (s.size, s.size))
    scenes = heldout_prompts(s, csvs["heldout"])

    from tsm_video.models import build_backbone

    base_model = build_backbone("vc2-tiny", checkpoint=base).eval().requires_grad_(False)
    reference = {"base": evaluate(base_model, s, batches, scenes)}
    del base_model
    methods: dict[str, dict] = {m: {} for m in ORDER}
    doc = {
        "full": False,
        "configuration": s.name,
        "seeds": list(s.seeds),  # configured; each method's lists hold the seeds it finished, in order
        "settings": asdict(s),
        "methods": methods,
        "reference": reference,
        "base_pretraining_seconds": base_seconds,
        "data_seconds": data_seconds,
        "machine_at_start": machine_start,
        "cost_unit": "optimizer steps of batch settings.batch_size (Tab. 8 accounting)",
        "vae": _vae_identity(),
        "tsm1_schedule": "per_expert — one run per expert, S steps on its own interval",
    }
    plans = {seed: method_plan(s, runs / f"seed_{seed}", seed, base, csvs["b"]) for seed in s.seeds}
    for method in ORDER:
        for seed in s.seeds:
            log(f"[study] seed {seed}: training {method}")
            seconds, steps = train_method(plans[seed], method, log)
            cfg, stage, scale, cost = plans[seed][method]
            t0 = time.perf_counter()
            run = stage1_run(cfg, scale) if stage == "foster" else plan_stages(cfg, stage)[-1]
            metrics = evaluate(load_trained(cfg, run), s, batches, scenes)
            metrics.update(seed=seed, eval_seconds=time.perf_counter() - t0, train_seconds=seconds,
                           own_steps=steps, cost_steps=cost)  # fmt: skip
            for k, v in metrics.items():
                methods[method].setdefault(k, []).append(v)
            log(f"[study] seed {seed} {method}: held-out ε-MSE {metrics['heldout_mse']:.5f}, {seconds:.0f} s")
            doc["summary"] = summarise(methods)
            _atomic_json(results, doc)
    doc["full"] = bool(is_full)
    doc["wall_seconds"] = time.perf_counter() - start
    doc["machine_at_end"] = _machine()
    doc["summary"] = summarise(methods)
    _atomic_json(results, doc)
    return doc


def merge_documents(docs: list[dict]) -> dict:
    """One document from per-seed documents of one configuration (``--seeds k`` runs in parallel).

    Per-method lists are concatenated in seed order; ``full`` holds when the seeds together are
    the configuration's and every part finished all methods; the summary is recomputed.
    """
    if len({d["configuration"] for d in docs}) != 1 or len({d["vae"]["sha256"] for d in docs}) != 1:
        raise ValueError("merge: the documents come from different configurations or VAEs")
    docs = sorted(docs, key=lambda d: d["settings"]["seeds"][0])
    merged = {**docs[0], "methods": {m: {} for m in ORDER}, "parts": []}
    seeds = []
    for d in docs:
        seeds += d["settings"]["seeds"]
        merged["parts"].append({k: d.get(k) for k in ("seeds", "full", "wall_seconds", "machine_at_start",
                                                      "machine_at_end")})  # fmt: skip
        for m, rec in d["methods"].items():
            for k, v in rec.items():
                merged["methods"][m].setdefault(k, []).extend(v)
    configured = {"full": FULL, "quick": QUICK, "smoke": SMOKE}[docs[0]["configuration"]].seeds
    merged["seeds"] = seeds
    merged["settings"] = {**docs[0]["settings"], "seeds": seeds}
    merged["full"] = (
        sorted(seeds) == sorted(configured)
        and all(d.get("wall_seconds") for d in docs)
        and (docs[0]["configuration"] == "full")
    )
    walls = [d.get("wall_seconds") for d in docs]
    merged["wall_seconds"] = max(walls) if all(walls) else None  # parallel parts; None: one unfinished
    merged["machine_at_end"] = docs[-1].get("machine_at_end", {})
    merged["summary"] = summarise(merged["methods"])
    return merged


# --------------------------------------------------------------------------------------
# report: plots and RESULTS.md
# --------------------------------------------------------------------------------------

LABELS = {
    "lora": "LoRA r4, S",
    "lora_nS": "LoRA r4, n·S",
    "lora_rn": "LoRA r=4n, S",
    "tsm1": "TSM-1 (n experts)",
    "tsm2": "TSM-2 [n, 1]",
    "moe": "sym. MoE",
    "router_x": "router x only",
    "router_t": "router t only",
}


def plot(doc: dict, prefix: Path) -> list[Path]:
    """Per-interval held-out ε-MSE relative to LoRA, and the paired differences with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {m: r for m, r in doc["methods"].items() if r.get("heldout_mse")}
    if "lora" not in methods:
        return []  # nothing to compare against yet
    n = doc["settings"]["n"]
    paths = [prefix.with_name(prefix.name + "_intervals.png"), prefix.with_name(prefix.name + "_diff.png")]
    ref = np.mean(methods["lora"]["heldout_mse_per_interval"], axis=0)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    centres = [(i + 0.5) * 1000 / n for i in range(n)]
    for m, rec in methods.items():
        curves = np.asarray(rec["heldout_mse_per_interval"]) / ref - 1  # seeds x n
        ax.errorbar(centres, 100 * curves.mean(0), yerr=100 * curves.std(0), marker="o", ms=3, capsize=2,
                    label=LABELS.get(m, m))  # fmt: skip
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("timestep t (interval centre)")
    ax.set_ylabel("held-out ε-MSE vs LoRA (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    summary = doc["summary"]
    names = [m for m in methods if m != "lora"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, title in zip(axes, ("heldout_mse", "gen_direction"), ("held-out ε-MSE", "direction (%)")):
        d = [summary[m].get(metric, {}) for m in names]
        mean = [x.get("diff_mean", math.nan) for x in d]
        lo = [x.get("diff_mean", math.nan) - x.get("diff_ci95", [math.nan])[0] for x in d]
        ax.barh(range(len(names)), mean, xerr=lo, color="tab:blue", alpha=0.7, capsize=2)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_yticks(range(len(names)), [LABELS.get(m, m) for m in names], fontsize=7)
        ax.set_title(f"{title}: method − LoRA (95 % CI)", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def _pm(stat: dict | None, scale: float = 1.0, digits: int = 4) -> str:
    if not stat:
        return "–"
    std = "" if math.isnan(stat["std"]) else f" ± {scale * stat['std']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f}{std}"


def _diff(stat: dict | None, scale: float = 1.0, digits: int = 4) -> str:
    if not stat:
        return "–"
    lo, hi = stat["diff_ci95"]
    ci = "" if math.isnan(lo) else f" [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"
    return f"{scale * stat['diff_mean']:+.{digits}f}{ci}"


def _compare(doc: dict, a: str, b: str) -> tuple[float, float, int] | None:
    """Paired ``a − b`` held-out ε-MSE over the seeds both finished → (mean, 95 % half-width, k)."""
    ma, mb = paired(doc["methods"], a, b, "heldout_mse")
    if not ma:
        return None
    k = len(ma)
    d = np.asarray(ma) - np.asarray(mb)
    half = _T975[min(k - 1, len(_T975)) - 1] * d.std(ddof=1) / math.sqrt(k) if k > 1 else math.nan
    return float(d.mean()), float(half), k


def verdict(doc: dict) -> list[str]:
    """Plain statements read off the paired statistics (held-out ε-MSE; lower is better): each
    comparison of Tab. 8 / Tab. 11, whether the paper's direction reproduces, and where (which
    timestep intervals) the differences sit."""

    def word(c: tuple[float, float, int]) -> str:
        mean, half, _ = c
        if math.isnan(half):
            return "one seed: no interval"
        return (
            "lower (better)"
            if mean + half < 0
            else "higher (worse)"
            if mean - half > 0
            else "not distinguishable"
        )

    pairs = [("tsm1", "lora"), ("tsm1", "lora_nS"), ("tsm1", "lora_rn"), ("tsm2", "tsm1"), ("tsm2", "lora")]
    pairs += [("tsm2", "lora_nS"), ("tsm2", "moe"), ("tsm2", "router_x"), ("tsm2", "router_t")]
    lines, found = [], {}
    for a, b in pairs:
        c = _compare(doc, a, b)
        if c is not None:
            found[(a, b)] = c
            lines.append(
                f"- {LABELS[a]} − {LABELS[b]}: {c[0]:+.5f} ± {c[1]:.5f} (95 % CI, {c[2]} seeds): {word(c)}"
            )
    need = [("tsm1", "lora"), ("tsm1", "lora_nS"), ("tsm1", "lora_rn"), ("tsm2", "tsm1")]
    if all(p in found for p in need) and any(math.isnan(found[p][1]) for p in need):
        lines.insert(0, "**Verdict: undecided** — one seed gives no confidence interval.")
    elif all(p in found for p in need):
        tsm1_wins = all(word(found[p]) == "lower (better)" for p in need[:3])
        tsm2_ok = word(found[("tsm2", "tsm1")]) != "higher (worse)"
        held = "reproduces" if tsm1_wins and tsm2_ok else "does not reproduce"
        lines.insert(
            0,
            f"**Verdict: the paper's direction (TSM-2 ≥ TSM-1 > LoRA at equal steps, compute and parameters) "
            f"{held} at this scale on held-out ε-MSE** (TSM-1 beats all three LoRA baselines: "
            f"{'yes' if tsm1_wins else 'no'}; TSM-2 no worse than TSM-1: {'yes' if tsm2_ok else 'no'}).",
        )
    elif found:
        lines.insert(0, "**Verdict: incomplete** — not every comparison of Tab. 8 has finished (see above).")
    base = doc.get("reference", {}).get("base", {}).get("heldout_mse")
    gains = {
        m: 100 * (1 - np.mean(r["heldout_mse"]) / base)
        for m, r in doc["methods"].items()
        if r.get("heldout_mse")
    }
    if base and gains:
        best = max(gains, key=gains.get)
        helper = {
            "lora_nS": "more optimizer steps on one shared adapter (n·S) help",
            "lora_rn": "more rank helps",
        }
        why = (
            f"the runs are far from converged, and {helper[best]} more than splitting the same "
            "steps over n interval experts that each see 1/n of t"
            if best in helper
            else "splitting the steps over interval experts pays off here"
        )
        listed = ", ".join(f"{LABELS[m]} {g:.1f} %" for m, g in gains.items())
        lines.append(
            f"- Evidence: post-pretraining lowered the base's held-out ε-MSE by {listed}. The largest gain "
            f"is {LABELS[best]}'s: at S = {doc['settings']['steps']} {why}."
        )
    for a, b in (("tsm1", "lora"), ("tsm2", "lora")):
        pa, pb = paired(doc["methods"], a, b, "heldout_mse_per_interval")
        if pa:
            rel = 100 * (np.asarray(pa) / np.asarray(pb) - 1).mean(0)
            n = len(rel)
            cells = ", ".join(
                f"[{i * 1000 // n},{(i + 1) * 1000 // n}) {r:+.1f} %" for i, r in enumerate(rel)
            )
            lines.append(f"- Where: {LABELS[a]} vs {LABELS[b]} per interval (mean over seeds): {cells}.")
    return lines


def _row(label: str, cost: object, rec: dict) -> str:
    """One table row from a method's summary (or the base's plain record)."""
    if "heldout_mse" in rec and isinstance(rec["heldout_mse"], dict):
        cells = [_pm(rec.get("heldout_mse")), _diff(rec.get("heldout_mse"))]
        cells += [_pm(rec.get(f"gen_{k}"), digits=0) for k in SCORE_NAMES]
        cells.append(_pm(rec.get("train_seconds"), digits=0))
    else:
        cells = [f"{rec['heldout_mse']:.4f}", ""] + [f"{rec[f'gen_{k}']:.0f}" for k in SCORE_NAMES] + [""]
    return f"| {label} | {cost} | " + " | ".join(cells) + " |"


def results_section(doc: dict, plots: list[Path]) -> str:
    """The RESULTS.md section of a study document."""
    st, s = doc["settings"], doc["summary"]
    m0, m1 = doc["machine_at_start"], doc.get("machine_at_end", {})
    head = "| method | cost (steps) | held-out ε-MSE | − LoRA (95 % CI) | "
    head += " | ".join(f"{k} %" for k in SCORE_NAMES) + " | train s |"
    rows = [
        head,
        "|" + " --- |" * (5 + len(SCORE_NAMES)),
        _row("base (domain A only)", 0, doc["reference"]["base"]),
    ]
    for m, rec in doc["methods"].items():
        if rec.get("heldout_mse"):
            rows.append(_row(LABELS.get(m, m), rec["cost_steps"][0], s[m]))
    done = [f"{m} ({len(r['heldout_mse'])} seeds)" for m, r in doc["methods"].items() if r.get("heldout_mse")]
    missing = [m for m, r in doc["methods"].items() if not r.get("heldout_mse")]
    status = (
        "Full run"
        if doc["full"]
        else (
            f'**Not the full run** (`"full": false`): configuration `{doc["configuration"]}`, finished: '
            f"{', '.join(done)}; not run: {', '.join(missing) or 'none'}"
        )
    )
    setup = (
        f"Setup: `vc2-tiny` with the demo's trained tiny VAE, {st['num_frames']}×{st['size']}×{st['size']} "
        f"clips, base pretrained {st['base_steps']} steps on {st['videos_a']} domain-A videos, then "
        f"post-pretrained on {st['videos_b']} domain-{st['domain'].upper()} videos; S = {st['steps']} steps, "
        f"n = {st['n']}, rank {st['rank']}, batch {st['batch_size']}, lr {st['lr']}, seeds {doc['seeds']}. "
        f"TSM-1 fostering: {doc['tsm1_schedule']}. Held-out ε-MSE: mean over the {st['n']} intervals on "
        f"{st['videos_heldout']} held-out clips (same clips, t and noise for all); generation: "
        f"{st['prompts']} held-out prompts, DDIM {st['ddim_steps']}, CFG {st['guidance_scale']}, "
        "light backend scores against the synthetic ground truth. Mean ± std over seeds; “− LoRA” is the "
        "paired difference to vanilla LoRA (negative = lower loss) with a 95 % t interval."
    )
    wall = doc.get("wall_seconds")
    machine = (
        f"Machine: {m0['machine']}, {m0['cpus']} CPUs, {m0['torch_threads']} torch threads, torch "
        f"{m0['torch']}; load average (1/5/15 min) {m0['loadavg_1_5_15']} at start, "
        f"{m1.get('loadavg_1_5_15', '–')} at end (a shared machine: wall times are upper bounds). "
        + (f"Wall time {wall / 60:.0f} min" if wall else "Stopped before the end (per-method times below)")
        + f"; base pretraining "
        f"{doc['base_pretraining_seconds']:.0f} s (cached)."
    )
    return "\n".join([
        MD_START,
        "## Post-pretraining study: LoRA vs TSM at toy scale (`benchmarks/study_post_pretraining.py`)",
        "",
        f"{status}. {machine}",
        "",
        setup,
        "",
        *rows,
        "",
        *verdict(doc),
        "",
        *[f"![{p.stem}](results/{p.name})" for p in plots],
        MD_END,
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the same code on fewer steps and seeds (≤ 10 min)"
    )
    parser.add_argument("--domain", choices=("b", "shifted"), default="b", help="post-pretraining domain")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="cache of data, base and runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--no-results-md", action="store_true", help="do not touch benchmarks/RESULTS.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="run only these seeds (one process per seed)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="merge per-seed JSONs of one configuration into --out (then redraw the report)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only redraw the plots and the RESULTS.md section from --out (e.g. of an interrupted run)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        _atomic_json(args.out, merge_documents([json.loads(p.read_text()) for p in args.merge]))
    if args.report_only or args.merge:
        doc = json.loads(args.out.read_text())
        write_section(RESULTS_MD, MD_START, MD_END, results_section(doc, plot(doc, args.out.with_suffix(""))))
        return 0
    settings = replace(QUICK if args.quick else FULL, domain=args.domain)
    every_seed = args.seeds is None or set(args.seeds) == set(settings.seeds)
    if args.seeds is not None:
        settings = replace(settings, seeds=tuple(args.seeds))
    claim_output_dir(args.workdir, COMMAND, clean=False)
    log_path = args.workdir / f"log_{settings.name}_seeds_{'-'.join(map(str, settings.seeds))}.txt"
    record_entries(args.workdir, COMMAND, [log_path.name])

    def log(msg: str) -> None:
        print(msg, flush=True)
        with log_path.open("a", encoding="utf-8") as f:
            f.write(msg + "\n")

    is_full = not args.quick and args.domain == "b" and every_seed
    doc = run_study(settings, args.workdir, args.out, log, is_full=is_full)
    plots = plot(doc, args.out.with_suffix(""))
    if not args.no_results_md:
        write_section(RESULTS_MD, MD_START, MD_END, results_section(doc, plots))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
