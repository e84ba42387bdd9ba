"""`tsm-video train --dry-run` on the real recipe: full-size VC2 on the meta device, no weights or data."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tsm_video.cli import main
from tsm_video.config import load_config
from tsm_video.train.plan import trainable_counts
from tsm_video.train.stages import plan_stages

RECIPE = Path(__file__).parents[2] / "configs" / "vc2_openvid70k.yaml"


def _count(line: str, key: str) -> int:
    return int(re.search(rf"{key} ([\d,]+)", line).group(1).replace(",", ""))


JOINT_LADDER = ("tsm.scales=[8,4,2,1]", "train.foster_schedule=joint")  # one run per scale


def test_dry_run_prints_the_plan_without_weights_or_data(tmp_path, capsys):
    code = main(["train", "--cfg", str(RECIPE), "--dry-run", f"run.output_dir={tmp_path}", *JOINT_LADDER])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "steps ×" in line
    }
    assert list(lines) == ["foster_s8", "foster_s4", "foster_s2", "foster_s1", "assemble"]
    # experts: one rank-4 (A, B) pair per interval on each of the 132 to_k/to_v Linears, so a scale-n run
    # trains n times the vanilla-LoRA (n = 1) experts; the text LoRA (rank 4 on 23 of OpenCLIP-H's 24
    # out_proj 1024→1024; the penultimate readout never runs the last block) is the same in every run
    lora = _count(lines["foster_s1"], "experts s1")
    for n in (8, 4, 2):
        assert _count(lines[f"foster_s{n}"], f"experts s{n}") == n * lora
    assert _count(lines["foster_s8"], "text LoRA") == 23 * 4 * (1024 + 1024)
    assert "router" in lines["assemble"] and "experts" not in lines["assemble"]
    assert all("5000 steps × 32 clips" in line for line in lines.values())
    # batch arithmetic and the missing inputs, named by key
    assert "1 process: 32 = 2 × 16 × 1" in out and "8 processes: 32 = 2 × 2 × 8" in out
    assert "model.checkpoint: checkpoints/vc2/model.ckpt" in out
    assert "data.csv: data/openvid70k/openvid70k.csv" in out
    assert "needs: stage-1 adapter of scale" not in out  # produced by the earlier runs of the plan
    assert "total: 25000 optimizer steps" in out


def test_meta_counts_match_closed_form():
    cfg = load_config(RECIPE, JOINT_LADDER)
    runs = {r.name: r for r in plan_stages(cfg)}
    lora = trainable_counts(cfg, runs["foster_s1"])
    # 132 wrapped projections: sum over layers of rank*(in+out) = experts s1 / rank
    assert lora["experts s1"] % 4 == 0
    assemble = trainable_counts(cfg, runs["assemble"])
    assert set(assemble) == {"router", "frozen"}
    # frozen in assemble = the 1.85 B backbone + every expert of all scales + the text LoRA
    base = trainable_counts(cfg, runs["foster_s1"])["frozen"]
    experts = sum(trainable_counts(cfg, runs[f"foster_s{n}"])[f"experts s{n}"] for n in (8, 4, 2, 1))
    assert assemble["frozen"] == base + experts + lora["text LoRA"]


def test_single_stage_plan_reports_missing_stage1(tmp_path, capsys):
    code = main(
        ["train", "--cfg", str(RECIPE), "--dry-run", "--stage", "assemble", f"run.output_dir={tmp_path}"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("needs: stage-1 adapter of scale") == 2  # the recipe's scales 8 and 1
    assert "experts [0, 1, 2, 3, 4, 5, 6, 7] missing, each can run alone with --interval I" in out


def test_dry_run_json_is_the_papers_budget(tmp_path, capsys):
    """Acceptance (issue 10): scales 8 and 1 fostered, each of the 8 experts 5000 steps × 32 samples
    of its own interval (per_expert), scale 1 for 5000 steps, then stage 2 over [8, 1] for 5000."""
    code = main(["train", "--cfg", str(RECIPE), "--dry-run", "--json", f"run.output_dir={tmp_path}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(captured.out.strip().splitlines()) == 1  # exactly one JSON object on stdout
    plan = json.loads(captured.out)
    assert plan["backbone"] == "vc2"
    keys = [
        "name",
        "stage",
        "scales",
        "intervals",
        "steps",
        "global_batch_size",
        "trainable_params",
        "total_params",
    ]
    assert all(list(r) == keys for r in plan["runs"])
    experts = [r for r in plan["runs"] if r["stage"] == "foster" and r["scales"] == [8]]
    assert sorted(i for r in experts for i in r["intervals"]) == list(range(8))
    assert all(len(r["intervals"]) == 1 and r["steps"] * r["global_batch_size"] == 5000 * 32 for r in experts)
    (lora,) = [r for r in plan["runs"] if r["stage"] == "foster" and r["scales"] == [1]]
    assert (lora["intervals"], lora["steps"], lora["global_batch_size"]) == ([0], 5000, 32)
    (tsm,) = [r for r in plan["runs"] if r["stage"] == "assemble"]
    assert (tsm["scales"], tsm["intervals"], tsm["steps"]) == ([8, 1], [], 5000)
    assert [r["stage"] for r in plan["runs"]][-1] == "assemble" and len(plan["runs"]) == 10
    # one expert trains what one vanilla LoRA trains (Tab. 10: 1-stage = LoRA parameters); every
    # stage-1 run builds the same backbone, and stage 2 adds 8 + 1 frozen experts and the routers
    assert {r["trainable_params"] for r in experts} == {lora["trainable_params"]}
    assert {r["total_params"] for r in experts} == {lora["total_params"]}
    cfg = load_config(RECIPE)
    expert = trainable_counts(cfg, plan_stages(cfg)[0])["expert"]
    assert tsm["total_params"] == lora["total_params"] + 8 * expert + tsm["trainable_params"]


def test_recipe_is_the_papers():
    """Scales core 8 + context 1 (Sec. 4.4, Tab. 11), per-expert budget (Tab. 8), caption dropout
    0.2 (LVDM's uncond_prob), each with its source in the YAML; [8, 4, 2, 1] one override away."""
    cfg = load_config(RECIPE)
    assert cfg.tsm.scales == [8, 1] and cfg.tsm.core_scale == 8
    assert cfg.train.foster_schedule == "per_expert" and cfg.data.caption_dropout == 0.2
    assert cfg.generate.precision == "fp32"
    text = RECIPE.read_text()
    for cited in ("Sec. 4.4", "Tab. 11", "Tab. 8", "uncond_prob=0.2", "tsm.scales=[8,4,2,1]"):
        assert cited in text, cited
    ladder = [r.name for r in plan_stages(load_config(RECIPE, ["tsm.scales=[8,4,2,1]"]))]
    assert ladder == [f"foster_s{n}_i{i}" for n in (8, 4, 2) for i in range(n)] + ["foster_s1", "assemble"]
