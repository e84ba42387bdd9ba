"""Tiny end-to-end runs of the trainer: outputs of every stage, clear errors before heavy work,
bit-exact resume, and two accelerate processes on disjoint data ending with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.config import ConfigError, load_config
from tsm_video.train.loop import has_text_lora
from tsm_video.train.runner import run_training
from tsm_video.train.stages import build_stage_model, load_trained, plan_stages
from tsm_video.tsm import read_adapter_metadata

pytestmark = pytest.mark.slow
QUIET = {"print_fn": lambda s: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_data, tiny_config):
    """Stage 1 at scales 2 and 1 (2 steps each), then stage 2 (1 step) with validation clips."""
    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(
        synth_data,
        out,
        "train.validation.every=1",
        "train.validation.steps=2",
        "train.validation.prompts=[a red circle]",
    )
    results = run_training(cfg, **QUIET)
    return cfg, results


def test_every_stage_writes_its_outputs(trained):
    cfg, results = trained
    assert [r.run.name for r in results] == ["foster_s2", "foster_s1", "assemble"]
    for r in results:
        d = r.run.dir
        assert r.output.is_file() and r.steps == r.run.steps
        assert load_config(d / "config.yaml") == cfg
        assert (d / "interval_loss.png").is_file()
        loss = json.loads((d / "interval_loss.json").read_text())
        assert loss["scale"] == 2 and len(loss["history"]) == r.run.steps
        assert all(v is not None and v > 0 for v in loss["total"])
        assert list(d.glob("logs/**/events.out.tfevents.*"))
        assert [p.name for p in sorted((d / "checkpoints").iterdir())] == [
            f"step_{s}" for s in range(max(1, r.steps - 1), r.steps + 1)
        ]
        assert (d / "validation" / f"step_{r.steps}" / "00.mp4").stat().st_size > 0
    meta = read_adapter_metadata(results[0].output)
    assert (meta["backbone"], meta["scales"], meta["stage"], meta["rank"]) == ("vc2-tiny", [2], "foster", 2)
    assert read_adapter_metadata(results[1].output)["stage"] == "lora"
    meta = read_adapter_metadata(results[2].output)
    assert (meta["stage"], meta["scales"], meta["router"]) == ("assemble", [2, 1], "asymmetric")


def test_stage2_keeps_stage1_experts_and_core_text_lora(trained):
    cfg, results = trained
    s2 = load_file(str(results[0].output))
    s1 = load_file(str(results[1].output))
    tsm = load_file(str(results[2].output))
    for key, value in s2.items():  # core scale: experts and its text LoRA, frozen in stage 2
        assert torch.equal(tsm[key], value), key
    for key, value in s1.items():
        if not key.startswith("text_encoder."):
            assert torch.equal(tsm[key], value), key
    assert any(".router." in k for k in tsm)
    model = load_trained(cfg, plan_stages(cfg)[-1])
    assert not any(p.requires_grad for p in model.parameters())


def test_stage2_from_a_latent_cache_encodes_captions_through_the_frozen_text_lora(
    trained, tiny_config, tmp_path
):
    """A cached context was encoded without the text LoRA: every stage whose model carries one
    (stage 1 training it, stage 2 holding it frozen) encodes captions live; only text-LoRA-free
    models (the base stage, text LoRA off) may read the cache's contexts."""
    cfg, _ = trained
    assemble = plan_stages(cfg)[-1]
    assert assemble.stage == "assemble" and has_text_lora(build_stage_model(cfg, assemble)[0])
    assert has_text_lora(build_stage_model(cfg, plan_stages(cfg)[0])[0])
    off = tiny_config(Path(cfg.data.csv), tmp_path, "tsm.text_lora.enabled=false")
    assert not has_text_lora(build_stage_model(off, plan_stages(off)[0])[0])
    base = tiny_config(Path(cfg.data.csv), tmp_path, "train.stages=[base]")
    assert not has_text_lora(build_stage_model(base, plan_stages(base)[0])[0])


def test_errors_before_heavy_work(trained, tmp_path, synth_data, tiny_config):
    cfg, _ = trained
    # missing inputs, named by key
    bad = tiny_config(tmp_path / "nope.csv", tmp_path)
    with pytest.raises(ConfigError, match=r"data\.csv: .*nope\.csv"):
        run_training(bad, **QUIET)
    # stage 2 without its stage-1 adapters
    fresh = tiny_config(synth_data, tmp_path / "fresh")
    with pytest.raises(ConfigError, match=r"stage-1 adapter of scale 2 not found.*--stage foster --scale 2"):
        run_training(fresh, stage="assemble", **QUIET)
    # stage-1 adapters from another config (rank 3) or backbone
    other = tiny_config(synth_data, Path(cfg.run.output_dir), "tsm.rank=3")
    with pytest.raises(ConfigError, match=r"another backbone/config: rank=2 \(this config: 3\)"):
        run_training(other, stage="assemble", **QUIET)
    # a run folder with checkpoints needs --resume
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        run_training(cfg, stage="foster", scale=2, **QUIET)
    # --resume with everything finished skips every run
    assert run_training(cfg, resume="latest", **QUIET) == []


def test_resume_is_bit_exact(tmp_path, synth_data, tiny_config):
    """4 steps straight == 2 steps, then --resume to 4 (accumulation 2, caption dropout, stratified t)."""
    args = (
        "train.stages=[foster]",
        "tsm.scales=[2]",
        "train.per_device_batch_size=1",
        "train.global_batch_size=2",
        "train.checkpoint_every=2",
        "data.num_frames=2",
    )
    straight = tiny_config(synth_data, tmp_path / "a", "train.steps.foster=4", *args)
    (full,) = run_training(straight, **QUIET)
    first = tiny_config(synth_data, tmp_path / "b", "train.steps.foster=2", *args)
    (half,) = run_training(first, **QUIET)
    second = tiny_config(synth_data, tmp_path / "b", "train.steps.foster=4", *args)
    (rest,) = run_training(second, resume="latest", **QUIET)
    assert rest.steps == 4 and half.sample_ids + rest.sample_ids == full.sample_ids
    a, b = load_file(str(full.output)), load_file(str(rest.output))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.digest == rest.digest
    loss_a = json.loads((full.run.dir / "interval_loss.json").read_text())
    loss_b = json.loads((rest.run.dir / "interval_loss.json").read_text())
    assert loss_a["history"] == loss_b["history"]


def test_two_processes_see_disjoint_data_and_end_identical(tmp_path, synth_data, tiny_config):
    cfg = tiny_config(
        synth_data,
        tmp_path,
        "train.stages=[foster]",
        "tsm.scales=[2]",
        "train.steps.foster=2",
        "train.per_device_batch_size=1",
        "train.global_batch_size=2",
        "data.num_frames=2",
    )
    from tsm_video.config import save_config

    save_config(cfg, tmp_path / "cfg.yaml")
    worker = Path(__file__).with_name("ddp_worker.py")
    # `--cpu` alone starts one process unless mpirun is installed; the torchrun launcher with
    # ACCELERATE_USE_CPU runs two CPU processes over gloo (see docs/training.md)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(worker),
            str(tmp_path / "cfg.yaml"),
            str(tmp_path / "ranks"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "ranks").iterdir())
    assert written == ["rank0.json", "rank1.json"], (written, proc.stdout[-2000:], proc.stderr[-2000:])
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    ids = [set(r["ids"]) for r in ranks]
    assert all(len(r["ids"]) == 2 for r in ranks)  # 2 steps x 1 clip, no accumulation
    assert not ids[0] & ids[1]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert (tmp_path / "tiny" / "foster_s2" / "adapter.safetensors").is_file()
