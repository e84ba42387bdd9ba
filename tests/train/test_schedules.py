"""Stage-1 schedules (issue 10): per-expert runs as independent jobs assembled bit-exactly into the
scale's adapter, refusal of disagreeing expert files, the joint schedule's exact stratification of
every global batch (simulated ranks × accumulation), and run seeds that use the whole name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsm_video.config import ConfigError, save_config
from tsm_video.train.intervals import assemble_scale
from tsm_video.train.randomness import IntervalSampler, rank_seed, stage_interval_sampler
from tsm_video.train.runner import run_training
from tsm_video.train.stages import interval_run, load_trained, plan_stages, stage1_adapter
from tsm_video.tsm import IntervalSchedule, read_adapter, read_adapter_metadata, write_adapter_file

QUIET = {"print_fn": lambda s: None}
PER_EXPERT = (
    "train.stages=[foster]",
    "tsm.scales=[2]",
    "train.foster_schedule=per_expert",
    "train.steps.foster=2",
    "train.per_device_batch_size=1",
    "train.global_batch_size=2",  # accumulation 2: the interval ids of both micro-batches are checked
    "data.num_frames=2",
)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, synth_data, tiny_config):
    """One command: expert 0, expert 1, then the automatic assembly of scale 2."""
    cfg = tiny_config(synth_data, tmp_path_factory.mktemp("seq"), *PER_EXPERT)
    return cfg, run_training(cfg, **QUIET)


@pytest.mark.slow
def test_independent_interval_jobs_assemble_bit_exactly(sequential, tmp_path, synth_data, tiny_config):
    cfg, results = sequential
    assert [r.run.name for r in results] == ["foster_s2_i0", "foster_s2_i1"]
    scale_file = stage1_adapter(cfg, 2)
    assert scale_file.is_file()  # assembled automatically after the last expert

    # the same recipe as two independent jobs (separate processes, own output tree), at once
    jobs = tiny_config(synth_data, tmp_path / "jobs", *PER_EXPERT)
    save_config(jobs, tmp_path / "cfg.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tsm_video.cli",
                "train",
                "--cfg",
                str(tmp_path / "cfg.yaml"),
                "--stage",
                "foster",
                "--scale",
                "2",
                "--interval",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in (1, 0)
    ]
    for p in procs:
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out[-3000:]
    assembled = stage1_adapter(jobs, 2)
    assert assembled.read_bytes() == scale_file.read_bytes()  # bit-exact, metadata included
    for i in (0, 1):
        assert interval_run(jobs, 2, i).output.read_bytes() == interval_run(cfg, 2, i).output.read_bytes()

    # the scale file is an ordinary stage-1 adapter: expert i = interval i's LoRA, the last
    # interval's text LoRA, and it loads strictly into a scale-2 fostering model
    meta, tensors = read_adapter(scale_file)
    assert (meta["stage"], meta["scales"], meta["schedule"]) == ("foster", [2], "per_expert")
    parts = [load_file(str(interval_run(cfg, 2, i).output)) for i in (0, 1)]
    for key, value in tensors.items():
        if key.startswith("text_encoder."):
            assert torch.equal(value, parts[-1][key]), key
        else:
            assert key.endswith(".s2") and value.shape[0] == 2, key
            for i in (0, 1):
                assert torch.equal(value[i], parts[i][key[: -len("s2")] + "s1"][0]), key
    joint = tiny_config(synth_data, Path(cfg.run.output_dir), *PER_EXPERT, "train.foster_schedule=joint")
    load_trained(joint, plan_stages(joint)[0])  # strict load into foster_s2's model

    # every expert file is there: --resume skips both runs and keeps the assembled file
    before = assembled.read_bytes()
    assert run_training(jobs, stage="foster", scale=2, resume="latest", **QUIET) == []
    assert assembled.read_bytes() == before


def test_interval_runs_draw_only_their_interval(sequential):
    cfg, results = sequential
    for r in results:
        meta = read_adapter_metadata(r.output)
        which = (meta["stage"], meta["interval_scale"], meta["interval"])
        assert which == ("foster_interval", 2, r.run.interval)
        assert meta["scales"] == [1]  # one expert: a plain LoRA bank
        losses = r.interval_loss  # ε-MSE per interval of the core scale over the run
        assert (losses[r.run.interval] is not None) and losses[1 - r.run.interval] is None


def test_assembly_refuses_disagreeing_files(sequential, tmp_path, tiny_config, synth_data):
    cfg, results = sequential
    # another config: a recipe key changed after training
    other = tiny_config(synth_data, Path(cfg.run.output_dir), *PER_EXPERT, "train.lr=1e-3")
    with pytest.raises(ConfigError, match=r"train\.lr=0\.0002 \(expected 0\.001\)"):
        assemble_scale(other, 2)
    with pytest.raises(ConfigError, match=r"rank=2 \(expected 3\)"):
        assemble_scale(tiny_config(synth_data, Path(cfg.run.output_dir), *PER_EXPERT, "tsm.rank=3"), 2)
    # files from two different base models, and a missing expert
    moved = tiny_config(synth_data, tmp_path, *PER_EXPERT)
    for i, r in enumerate(results):
        meta, tensors = read_adapter(r.output)
        if i == 1:
            meta["base"] = "sha256:" + "0" * 64
        write_adapter_file(interval_run(moved, 2, i).output, tensors, meta)
    with pytest.raises(ConfigError, match=r"foster_s2_i1/adapter.safetensors: base='sha256:0+'"):
        assemble_scale(moved, 2)
    interval_run(moved, 2, 1).output.unlink()
    with pytest.raises(ConfigError, match=r"experts \[1\] not trained yet"):
        assemble_scale(moved, 2)
    # stage 2 names the missing expert before any model is built
    two = tiny_config(synth_data, tmp_path, *PER_EXPERT, "tsm.scales=[2,1]", "train.stages=[foster,assemble]")
    with pytest.raises(ConfigError, match=r"scale 2 not found.*experts \[1\] missing.*--interval I"):
        run_training(two, stage="assemble", **QUIET)


def test_interval_flag_errors(tiny_config, synth_data, tmp_path):
    cfg = tiny_config(synth_data, tmp_path, *PER_EXPERT)
    with pytest.raises(ConfigError, match="scale 2 has intervals 0..1"):
        plan_stages(cfg, "foster", 2, 2)
    with pytest.raises(ConfigError, match="needs --stage foster --scale N"):
        plan_stages(cfg, "foster", None, 0)
    joint = tiny_config(synth_data, tmp_path, *PER_EXPERT, "train.foster_schedule=joint")
    with pytest.raises(ConfigError, match="belong to train.foster_schedule=per_expert"):
        plan_stages(joint, "foster", 2, 1)


@pytest.mark.parametrize("processes,accumulation,per_device", [(8, 2, 2), (2, 4, 1), (3, 1, 5), (1, 16, 2)])
@pytest.mark.parametrize("scale", [2, 3, 8])
def test_joint_stratifies_every_global_batch(processes, accumulation, per_device, scale):
    """Every optimizer step's global batch, gathered from independent per-rank samplers, holds
    each interval ⌊G/n⌋ or ⌈G/n⌉ times (exactly G/n when n divides G), the same on every rank."""
    G = processes * accumulation * per_device
    ranks = [
        IntervalSampler("stratified", scale, 0, processes, accumulation, per_device, seed=11)
        for _ in range(processes)  # one object per simulated rank: nothing is shared between them
    ]
    steps = []
    for step in range(40):
        ids = torch.cat([ranks[r](step, k, r) for r in range(processes) for k in range(accumulation)])
        counts = torch.bincount(ids, minlength=scale)
        assert ids.shape == (G,) and counts.sum() == G
        assert counts.min() >= G // scale and counts.max() <= -(-G // scale)
        if G % scale == 0:
            assert (counts == G // scale).all()
        steps.append(ids)
    assert any(not torch.equal(steps[0], s) for s in steps[1:])  # a fresh draw every step
    again = IntervalSampler("stratified", scale, 0, processes, accumulation, per_device, seed=11)
    last = (7, accumulation - 1, processes - 1)
    assert torch.equal(again(*last), ranks[0](*last))
    # the timesteps drawn from those ids lie in their intervals
    t = IntervalSchedule(1000).uniform_in(steps[0], scale, torch.Generator().manual_seed(0))
    assert torch.equal(IntervalSchedule(1000).interval_index(t, scale), steps[0])


def test_stage_samplers(tiny_config, synth_data, tmp_path):
    joint = tiny_config(synth_data, tmp_path, "train.foster_schedule=joint")
    runs = {r.name: r for r in plan_stages(joint)}
    sampler, n = stage_interval_sampler(joint, runs["foster_s2"], 2, 1)
    assert (sampler.mode, n, sampler.global_batch) == ("stratified", 2, 4)
    assert stage_interval_sampler(joint, runs["foster_s1"], 2, 1)[0].mode == "uniform"
    assert stage_interval_sampler(joint, runs["assemble"], 2, 1)[0].mode == "uniform"
    expert = interval_run(joint, 2, 1)
    sampler, n = stage_interval_sampler(joint, expert, 1, 2)
    assert (sampler.mode, n, sampler(0, 1, 0).tolist()) == ("interval", 2, [1, 1])


def test_run_seeds_use_every_byte_of_the_name():
    assert sum(b"foster_s12") == sum(b"foster_s21")
    seeds = {rank_seed(0, 0, name) for name in ("foster_s12", "foster_s21", "foster_s8_i3", "foster_s8_i30")}
    assert len(seeds) == 4
    assert rank_seed(0, 0, "foster_s8_i3") == rank_seed(0, 0, "foster_s8_i3")
    assert len({rank_seed(s, r, "foster_s8") for s in (0, 1) for r in (0, 1)}) == 4
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.mark.slow
def test_joint_run_feeds_each_step_an_exact_share(tmp_path, synth_data, tiny_config, monkeypatch):
    """The trainer asks the sampler for (step, micro-batch, rank) in order: a joint run at scale 4
    with 1 clip × 4 accumulation steps sees every interval exactly once per optimizer step (a
    per-micro-batch draw would do so with probability 4!/4^4 ≈ 9 % per step)."""
    import tsm_video.train.loop as loop

    calls = []

    def recording(*args):
        sampler, scale = stage_interval_sampler(*args)

        def ids(step, micro, rank):
            out = sampler(step, micro, rank)
            calls.append((step, micro, rank, out.tolist()))
            return out

        return ids, scale

    monkeypatch.setattr(loop, "stage_interval_sampler", recording)
    cfg = tiny_config(
        synth_data,
        tmp_path,
        *PER_EXPERT,
        "tsm.scales=[4]",
        "train.foster_schedule=joint",
        "train.global_batch_size=4",
        "train.checkpoint_every=2",
    )
    (result,) = run_training(cfg, **QUIET)
    assert [c[:3] for c in calls] == [(s, k, 0) for s in range(2) for k in range(4)]
    for step in range(2):
        assert sorted(i for s, _, _, ids in calls if s == step for i in ids) == [0, 1, 2, 3]
    assert all(v is not None for v in result.interval_loss)


def test_cli_assembles_on_request_and_plans_one_expert(sequential, tmp_path, capsys):
    from tsm_video.cli import main

    cfg, _ = sequential
    save_config(cfg, tmp_path / "cfg.yaml")
    scale_file = stage1_adapter(cfg, 2)
    before = scale_file.read_bytes()
    scale_file.unlink()
    assert main(["train", "--cfg", str(tmp_path / "cfg.yaml"), "--assemble-intervals"]) == 0
    assert scale_file.read_bytes() == before and "[foster_s2] assembled" in capsys.readouterr().out
    assert main(["train", "--cfg", str(tmp_path / "cfg.yaml"), "--assemble-intervals", "--scale", "4"]) == 2
    assert "--scale 4: not one of tsm.scales=[2]" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--cfg",
            str(tmp_path / "cfg.yaml"),
            "--dry-run",
            "--json",
            "--stage",
            "foster",
            "--scale",
            "2",
            "--interval",
            "1",
        ]
    )
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert code == 0 and (run["name"], run["scales"], run["intervals"], run["steps"]) == (
        "foster_s2_i1",
        [2],
        [1],
        2,
    )
    assert main(["train", "--cfg", str(tmp_path / "cfg.yaml"), "--json"]) == 2
    assert "--json goes with --dry-run" in capsys.readouterr().err
