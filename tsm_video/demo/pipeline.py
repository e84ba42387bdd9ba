"""The embedded demo: the whole VC2 + TSM pipeline on CPU in minutes, with the real code path.

``tsm-video demo --out demo_out`` (``make demo``):

1. claims ``out`` (:mod:`tsm_video.demo.outdir`: a new or empty folder, or one an earlier demo
   marked; nothing else is ever deleted);
2. a synthetic OpenVid-format dataset (``data_tools.synth``: coloured shapes moving, captions
   naming colour/shape/count/direction/speed) and a held-out set;
3. the starting checkpoint: ``vc2-tiny`` with the shipped pretrained base (UNet and text
   encoder, :mod:`tsm_video.demo.base`) and the shipped tiny VAE (:mod:`tsm_video.demo.vae`);
4. ``tsm-video train`` on ``configs/demo.yaml``: post-pretraining only, as the paper does with
   VC2 — TSM stage 1 for the core scale n (per-expert fostering) and the scale-1 context
   (= vanilla LoRA), stage 2 (a config with stage ``base`` trains its own base first);
5. held-out ε-MSE per timestep interval for base / vanilla LoRA / TSM stage 1 / TSM stage 2,
   identical clips, timesteps and noise for all;
6. clips for held-out captions from every model (same seeds), as mp4 and a frame grid, and
   light EvalCrafter-style scores (colour, count, direction, amplitude) against the ground truth;
7. ``report.md`` with the tables, the per-interval loss curves, the frames and per-step times.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from data_tools.synth import DIRECTIONS, make_synthetic_dataset
from tsm_video.config import CONFIG_DIR, RunConfig, load_config
from tsm_video.data import StreamLoader, VideoClipDataset, read_index, write_mp4
from tsm_video.demo.outdir import claim_output_dir, record_entries
from tsm_video.demo.scores import SCORE_NAMES, light_scores
from tsm_video.generation.media import compare_grid, write_frame_grid
from tsm_video.train.evaluate import interval_eps_mse
from tsm_video.train.interval_loss import plot_interval_losses
from tsm_video.train.runner import run_training
from tsm_video.train.stages import compared_runs, load_trained, plan_stages
from tsm_video.train.validation import sample_clips

__all__ = ["run_demo", "heldout_batches", "DEMO_CONFIG", "COMMAND"]

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
COMMAND = "tsm-video demo"
NUM_TRAIN_VIDEOS = 128
NUM_HELDOUT_VIDEOS = 32
NUM_SHOWN = 3  # prompts in sample_frames.png
NUM_SCORED = 16  # held-out prompts the light scores average over (≈ 1 s of generation each, 4 models)
PNG_ZOOM = 4  # sample_frames.png shows the tiny clips enlarged (nearest neighbour)
#: everything the demo writes into its folder (the marker lists these; a rerun removes them)
ENTRIES = (
    "data",
    "heldout",
    "init",
    "runs",
    "clips",
    "report.md",
    "sample_frames.png",
    "interval_loss_training.png",
    "interval_loss_heldout.png",
)


def heldout_batches(csv: Path, num_frames: int, size: tuple[int, int]) -> list[dict]:
    """Centred clips (``num_frames`` at ``size`` = (H, W)) of the held-out videos listed in ``csv``
    (videos in ``csv``'s folder), in index order: deterministic, so every model sees the same."""
    records = read_index(csv, videos=csv.parent / "videos")
    ds = VideoClipDataset(
        records, num_frames=num_frames, size=size, train=False, seed=0, rank=0, world_size=1
    )
    batches = list(StreamLoader(ds, batch_size=8))
    for b in batches:
        b.pop("id", None)
    return batches


def _scenes(csv: Path, count: int) -> list[dict]:
    """Ground truth of the first ``count`` held-out videos with distinct captions (name order)."""
    truth = json.loads((csv.parent / "ground_truth.json").read_text())
    scenes, seen = [], set()
    for name in sorted(truth):
        if truth[name]["caption"] not in seen:
            seen.add(truth[name]["caption"])
            scenes.append({**truth[name], "video": name})
        if len(scenes) == count:
            break
    return scenes


def _fmt(values: list[float]) -> str:
    return " | ".join(f"{v:.4f}" for v in values)


def run_demo(
    out: str | Path = "demo_out",
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Run the demo into ``out`` and return the report path.

    ``out`` must be new, empty, or an earlier demo's folder (:func:`claim_output_dir` raises
    :class:`~tsm_video.demo.outdir.OutputDirError` otherwise, before anything is written).
    """
    # the recipes' modules are imported here, not at the top: `python -m tsm_video.demo.base`
    # (or `.vae`) imports this package first and must not find itself already imported
    from tsm_video.demo.base import BASE_WEIGHTS
    from tsm_video.demo.vae import compose_checkpoint

    start = time.perf_counter()
    timings: dict[str, float] = {}
    user_cfg = load_config(config or DEMO_CONFIG, overrides)  # bad config/overrides: fail first
    out = claim_output_dir(out, COMMAND)
    record_entries(out, COMMAND, list(ENTRIES))

    # 1. data and the starting checkpoint
    t0 = time.perf_counter()
    d = user_cfg.data
    size = (d.height, d.width)
    # videos as long as a training clip: every clip shows the whole prompted motion
    csv = make_synthetic_dataset(
        out / "data", num_videos=NUM_TRAIN_VIDEOS, seed=0, size=size, num_frames=d.num_frames
    )
    heldout_csv = make_synthetic_dataset(
        out / "heldout", num_videos=NUM_HELDOUT_VIDEOS, seed=1, size=size, num_frames=d.num_frames
    )
    init = user_cfg.model.checkpoint or compose_checkpoint(
        out / "init" / "model.safetensors", user_cfg.run.seed, base_weights=BASE_WEIGHTS
    )
    cfg = load_config(
        config or DEMO_CONFIG,
        [
            f"run.output_dir={out / 'runs'}",
            f"data.csv={csv}",
            f"data.videos={csv.parent / 'videos'}",
            f"model.checkpoint={init}",
            *overrides,
        ],
    )
    timings["synthetic data + starting checkpoint"] = time.perf_counter() - t0
    print(f"[demo] {NUM_TRAIN_VIDEOS} training + {NUM_HELDOUT_VIDEOS} held-out synthetic videos in {out}")

    # 2. train every stage with the real trainer
    t0 = time.perf_counter()
    for result in run_training(cfg):
        timings[f"train {result.run.name} ({result.steps} steps)"] = result.seconds
    timings["training (all stages)"] = time.perf_counter() - t0

    # 3. held-out ε-MSE per interval of the core scale
    t0 = time.perf_counter()
    runs = {r.name: r for r in plan_stages(cfg)}
    core = cfg.tsm.core_scale
    models = {} if "base" in runs else {"base": _pretrained_base(cfg)}
    models.update({label: load_trained(cfg, run) for label, run in compared_runs(cfg).items()})
    batches = heldout_batches(heldout_csv, cfg.data.num_frames, (cfg.data.height, cfg.data.width))
    losses = {label: interval_eps_mse(model, batches, core, seed=0) for label, model in models.items()}
    timings["held-out evaluation"] = time.perf_counter() - t0

    # 4. clips for held-out captions from every model (same noise) and their light scores
    t0 = time.perf_counter()
    scenes = _scenes(heldout_csv, NUM_SCORED)
    g = cfg.generate
    clips = {
        label: sample_clips(
            model,
            [s["caption"] for s in scenes],
            (g.num_frames, g.height, g.width),
            g.steps,
            g.guidance_scale,
            g.fps,
            g.seed,
            eta=g.eta,
        )
        for label, model in models.items()
    }
    timings["generation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = {label: light_scores(c, scenes, fps=g.fps) for label, c in clips.items()}
    truth_clips = _truth_clips(heldout_csv, scenes, g.num_frames)
    scores["held-out videos (ceiling)"] = light_scores(truth_clips, scenes, fps=g.fps)
    timings["light scores"] = time.perf_counter() - t0
    _write_clips(out, scenes[:NUM_SHOWN], clips, truth_clips, g.fps)

    # 5. report
    curves = {
        r.name: json.loads((r.dir / "interval_loss.json").read_text())
        for r in runs.values()
        if r.stage != "base"
    }
    plot_interval_losses(
        curves, out / "interval_loss_training.png", title=f"training ε-MSE per interval (scale {core})"
    )
    _plot_heldout(losses, out / "interval_loss_heldout.png", core)
    timings["total"] = time.perf_counter() - start
    path = out / "report.md"
    path.write_text(_report(cfg, losses, scores, scenes, list(clips), timings, core))
    print("\n[demo] held-out ε-MSE per timestep interval (lower is better):")
    print(_loss_table(losses, core))
    print(_score_table(scores))
    print(f"[demo] wall time {timings['total']:.0f} s; report: {path}")
    return path


def _pretrained_base(cfg: RunConfig) -> torch.nn.Module:
    """The base the stages started from (``model.checkpoint``), frozen, eval mode."""
    from tsm_video.models import build_backbone

    model = build_backbone(cfg.model.backbone, checkpoint=cfg.base_weights())
    return model.requires_grad_(False).eval()


def _truth_clips(csv: Path, scenes: list[dict], num_frames: int) -> list[np.ndarray]:
    """The held-out videos of ``scenes`` at the generated clips' frame count (evenly spaced)."""
    from tsm_video.data.video_io import decode_frames

    clips = []
    for scene in scenes:
        total = len(scene["centres"])
        picks = np.linspace(0, total - 1, num_frames).round().astype(int).tolist()
        frames, _ = decode_frames(csv.parent / "videos" / scene["video"], picks)
        clips.append(frames)
    return clips


def _write_clips(
    out: Path, scenes: list[dict], clips: dict[str, list[np.ndarray]], truth: list[np.ndarray], fps: int
) -> None:
    """mp4 per model and prompt, a side-by-side mp4 per prompt, and sample_frames.png."""
    import cv2

    clip_dir = out / "clips"
    labels = ["held-out video", *clips]
    rows = []
    for i in range(len(scenes)):
        for label, c in clips.items():
            write_mp4(
                clip_dir / f"{i:02d}_{label.split(' (')[0].replace(' ', '_').lower()}.mp4", c[i], fps=fps
            )
        h, w = clips[labels[1]][i].shape[1:3]
        real = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in truth[i]])
        panels = [
            np.repeat(np.repeat(c, PNG_ZOOM, 1), PNG_ZOOM, 2) for c in (real, *(c[i] for c in clips.values()))
        ]
        grid = compare_grid(panels, labels)  # (F, h', k w', 3)
        write_mp4(clip_dir / f"{i:02d}_compare.mp4", grid, fps=fps)
        picks = np.linspace(0, len(grid) - 1, 4).round().astype(int)
        rows.append(np.concatenate(list(grid[picks]), axis=1))  # h (4 · k w) c
    write_frame_grid(out / "sample_frames.png", np.concatenate(rows, axis=0)[None], columns=1)


def _loss_table(losses: dict[str, list[float]], n: int) -> str:
    bounds = [f"[{i * 1000 // n},{(i + 1) * 1000 // n})" for i in range(n)]
    lines = [f"| model | {' | '.join('t∈' + b for b in bounds)} | mean |", "|" + " --- |" * (n + 2)]
    lines += [f"| {label} | {_fmt(v)} | {sum(v) / len(v):.4f} |" for label, v in losses.items()]
    return "\n".join(lines)


def _score_table(scores: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| model | " + " | ".join(f"{k} %" for k in SCORE_NAMES) + " |",
        "|" + " --- |" * (len(SCORE_NAMES) + 1),
    ]
    for label, s in scores.items():
        cells = [
            "–" if math.isnan(s[k]["value"]) else f"{s[k]['value']:.0f} (n={s[k]['n']})" for k in SCORE_NAMES
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_table(losses: dict[str, list[float]], scores: dict[str, dict[str, dict]]) -> str:
    """One row per model: mean held-out ε-MSE beside its light scores (percent)."""
    lines = [
        "| model | held-out ε-MSE | " + " | ".join(f"{k} %" for k in SCORE_NAMES) + " |",
        "|" + " --- |" * (len(SCORE_NAMES) + 2),
    ]
    for label, s in scores.items():
        loss = f"{np.mean(losses[label]):.4f}" if label in losses else "–"
        cells = ["–" if math.isnan(s[k]["value"]) else f"{s[k]['value']:.0f}" for k in SCORE_NAMES]
        lines.append(f"| {label} | {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(losses: dict[str, list[float]], scores: dict[str, dict[str, dict]]) -> list[str]:
    """Plain sentences: is TSM better than vanilla LoRA here (held-out loss, light scores)?"""
    mean = {label: float(np.mean(v)) for label, v in losses.items()}
    lora = mean["vanilla LoRA (s1)"]
    # A clip moving in a random direction scores 1/4; one moving along the prompted axis with a
    # random sign scores 1/2 (what the base's phase 1 alone did: it read the axis and the speed, not
    # the sign; docs/training.md). Moving in the prompted direction means beating the latter.
    axis_only = 2 / len(DIRECTIONS)
    n = scores["base"]["direction"]["n"]
    bar = n * axis_only + 2 * math.sqrt(n * axis_only * (1 - axis_only))  # hits, 2 binomial sd above
    drawn = [k for k, s in scores.items() if s["direction"]["value"] / 100 * n > bar]
    lines = [
        f"- Drawing the prompted motion (direction score above {100 * axis_only:.0f} %, what clips "
        f"moving along the prompted axis with a random sign score, by two binomial standard deviations "
        f"over {n} prompts, i.e. > {100 * bar / n:.0f} %; a random direction scores "
        f"{100 / len(DIRECTIONS):.0f} %): {', '.join(drawn) or 'none'}. Where the models do not, their "
        "clips cannot show a difference between the methods and only the held-out loss compares them."
    ]
    for label in [k for k in mean if k.startswith("TSM")]:
        rel = 100 * (mean[label] / lora - 1)
        word = "lower (better)" if rel < 0 else "higher (worse)"
        lines.append(f"- {label}: held-out ε-MSE {rel:+.2f} % vs vanilla LoRA ({word}).")
    gen = [k for k in SCORE_NAMES if not math.isnan(scores["TSM stage 2"][k]["value"])]
    wins = [k for k in gen if scores["TSM stage 2"][k]["value"] > scores["vanilla LoRA (s1)"][k]["value"]]
    losses_ = [k for k in gen if scores["TSM stage 2"][k]["value"] < scores["vanilla LoRA (s1)"][k]["value"]]
    lines.append(
        f"- Light scores, TSM stage 2 vs vanilla LoRA: higher on {', '.join(wins) or 'none'}, lower on "
        f"{', '.join(losses_) or 'none'}, equal on the rest."
    )
    better = mean["TSM stage 2"] < lora and len(wins) > len(losses_)
    lines.append(
        "- **At demo scale TSM is "
        + ("better than" if better else "not better than")
        + " vanilla LoRA** on this run (one seed, a few hundred steps, "
        f"{NUM_HELDOUT_VIDEOS} held-out clips, {NUM_SCORED} scored prompts: differences of a few percent are "
        "within seed-to-seed spread). The multi-seed, equal-cost comparison is "
        "`benchmarks/study_post_pretraining.py` (benchmarks/RESULTS.md)."
    )
    return lines


def _plot_heldout(losses: dict[str, list[float]], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    centers = [(i + 0.5) * 1000 / n for i in range(n)]
    for label, v in losses.items():
        ax.plot(centers, v, marker="o", label=label)
    ax.set_xlabel("timestep t (interval centre)")
    ax.set_ylabel("held-out ε-MSE")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _report(
    cfg: RunConfig,
    losses: dict[str, list[float]],
    scores: dict[str, dict[str, dict]],
    scenes: list[dict],
    shown: list[str],
    timings: dict[str, float],
    n: int,
) -> str:
    d, t = cfg.data, cfg.train
    own_base = "base" in t.stages
    base_words = (
        f"the base trained here for {t.steps.base} steps from `model.checkpoint`"
        if own_base
        else "the base is the shipped pretrained demo base, UNet and text encoder from "
        "`python -m tsm_video.demo.base`"
    ) + ", the tiny VAE trained by `python -m tsm_video.demo.vae`"
    base_stage = f"base {t.steps.base} steps (full denoiser), " if own_base else "post-pretraining only: "
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        "# tsm-video demo report",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; load average at the end {load}. Wall time **{timings['total']:.0f} s**.",
        "",
        "Everything below ran the real code path of the VC2 recipe (`configs/vc2_openvid70k.yaml`), only "
        f"smaller (`configs/demo.yaml`): backbone `{cfg.model.backbone}` (VC2 architecture; {base_words}), "
        f"{d.num_frames}×{d.height}×{d.width} clips of synthetic OpenVid-format videos, TSM scales "
        f"{cfg.tsm.scales} (core {n} + the scale-1 context, as the paper's [8, 1]), rank {cfg.tsm.rank}, "
        f"text LoRA {'on' if cfg.tsm.text_lora.enabled else 'off'}.",
        "",
        f"Stages: {base_stage}stage 1 {t.foster_schedule} with "
        f"{t.steps.foster} steps per run (`per_expert`: one run per expert of scale {n}; scale 1 = vanilla "
        f"LoRA), stage 2 {t.steps.assemble} steps (router only); global batch "
        f"{t.global_batch_size}.",
        "",
        "## Is TSM better here?",
        "",
        _summary_table(losses, scores),
        "",
        *_verdict(losses, scores),
        "",
        "## Held-out ε-MSE per timestep interval",
        "",
        "Same held-out clips, timesteps and noise for every model (lower is better).",
        "",
        _loss_table(losses, n),
        "",
        "![held-out loss](interval_loss_heldout.png)",
        "",
        "## Light EvalCrafter-style scores",
        "",
        f"{len(scenes)} held-out prompts, one clip each (same initial noise for every model), scored "
        "against the synthetic ground truth by the light backend (`eval_crafter.metrics.light`): colour "
        "(the fixed hue rule; only prompts whose colour it can name), count, motion direction (foreground "
        "centroid), amplitude (slow/fast travel). The held-out videos themselves give the ceiling.",
        "",
        _score_table(scores),
        "",
        "## Training loss per interval",
        "",
        "![training loss](interval_loss_training.png)",
        "",
        "## Samples",
        "",
        f"Rows: prompts; columns: the held-out video, then {', '.join(shown)} (4 frames each, same initial "
        "noise). Videos in `clips/`.",
        "",
        *[f"{i + 1}. {s['caption']}" for i, s in enumerate(scenes[:NUM_SHOWN])],
        "",
        "![sample frames](sample_frames.png)",
        "",
        "## Time",
        "",
        "| step | seconds |",
        "| --- | --- |",
        *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
        "",
    ]
    return "\n".join(lines)
