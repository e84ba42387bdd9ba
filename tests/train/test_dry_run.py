"""`tsm-video train --dry-run` on the real recipe: full-size VC2 on the meta device, no weights or data."""

from __future__ import annotations

import re
from pathlib import Path

from tsm_video.cli import main
from tsm_video.config import load_config
from tsm_video.train.plan import trainable_counts
from tsm_video.train.stages import plan_stages

RECIPE = Path(__file__).parents[2] / "configs" / "vc2_openvid70k.yaml"


def _count(line: str, key: str) -> int:
    return int(re.search(rf"{key} ([\d,]+)", line).group(1).replace(",", ""))


def test_dry_run_prints_the_plan_without_weights_or_data(tmp_path, capsys):
    code = main(["train", "--cfg", str(RECIPE), "--dry-run", f"run.output_dir={tmp_path}"])
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
    cfg = load_config(RECIPE)
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
    assert out.count("needs: stage-1 adapter of scale") == 4
