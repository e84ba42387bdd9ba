"""benchmarks/study_post_pretraining.py: the smoke configuration runs the full code path."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.study_post_pretraining import (
    ORDER,
    SMOKE,
    merge_documents,
    paired_stats,
    prepare_data,
    pretrain_base,
    results_section,
    run_study,
)


def test_paired_stats_closed_form():
    s = paired_stats([1.0, 2.0, 4.0], [0.5, 1.0, 2.0])  # differences 0.5, 1, 2
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(math.sqrt(7 / 3))
    d_std = math.sqrt(((0.5 - 7 / 6) ** 2 + (1 - 7 / 6) ** 2 + (2 - 7 / 6) ** 2) / 2)
    half = 4.303 * d_std / math.sqrt(3)  # t_{0.975, 2}
    assert s["diff_mean"] == pytest.approx(7 / 6)
    assert s["diff_ci95"] == pytest.approx([7 / 6 - half, 7 / 6 + half])
    one = paired_stats([1.0], [2.0])
    assert one["diff_mean"] == -1.0 and math.isnan(one["std"]) and math.isnan(one["diff_ci95"][0])
    with pytest.raises(ValueError, match="equal seeds"):
        paired_stats([1.0, 2.0], [1.0])


def test_smoke_study_writes_the_documented_json(tmp_path):
    out = tmp_path / "study.json"
    doc = run_study(SMOKE, tmp_path / "work", out, log=lambda m: None)
    data = json.loads(out.read_text())
    assert data["full"] is False and data["seeds"] == list(SMOKE.seeds)
    assert list(data["methods"]) == list(ORDER)
    for name, rec in data["methods"].items():
        assert len(rec["heldout_mse"]) == len(SMOKE.seeds), name
        assert len(rec["heldout_mse_per_interval"][0]) == SMOKE.n
        assert rec["heldout_mse"][0] == pytest.approx(sum(rec["heldout_mse_per_interval"][0]) / SMOKE.n)
        assert {"gen_color", "gen_count", "gen_direction", "gen_amplitude", "train_seconds"} <= set(rec)
    n, S = SMOKE.n, SMOKE.steps
    cost = {m: data["methods"][m]["cost_steps"][0] for m in ORDER}
    stage2 = n * S + 2 * S  # TSM-1 + the scale-1 expert + S router steps (Tab. 8 accounting)
    assert cost == {"lora": S, "tsm1": n * S, "lora_rn": S, "lora_nS": n * S} | {
        m: stage2 for m in ("tsm2", "moe", "router_x", "router_t")
    }
    assert data["summary"]["lora"]["heldout_mse"]["diff_mean"] == 0.0
    # the ablations assembled the same experts as TSM-2 (linked, not retrained)
    seed_dir = tmp_path / "work" / f"runs_{SMOKE.name}_seeds_0" / f"seed_{SMOKE.seeds[0]}"
    assert (seed_dir / "moe" / f"foster_s{n}").resolve() == (seed_dir / "tsm" / f"foster_s{n}").resolve()
    assert "Not the full run" in results_section(doc, [])
    # a rerun reuses the cached data and base
    csvs = prepare_data(SMOKE, tmp_path / "work")
    logged = []
    base, seconds = pretrain_base(SMOKE, tmp_path / "work", csvs["a"], logged.append)
    assert logged == [f"[study] reusing the cached base {base}"]
    assert seconds == doc["base_pretraining_seconds"]


def test_merge_concatenates_seeds_and_recomputes_the_summary():
    def part(seed: int, mse: float, finished: bool = True) -> dict:
        methods = {m: {} for m in ORDER}
        methods["lora"] = {"heldout_mse": [mse], "cost_steps": [40], "seed": [seed]}
        methods["tsm1"] = {"heldout_mse": [mse - 0.01], "cost_steps": [320], "seed": [seed]}
        return {"configuration": "full", "vae": {"sha256": "x"}, "settings": {"seeds": [seed], "n": 8},
                "seeds": [seed], "methods": methods, "wall_seconds": 1.0 if finished else None}  # fmt: skip

    merged = merge_documents([part(2, 0.3), part(0, 0.1), part(1, 0.2)])
    assert merged["seeds"] == [0, 1, 2] and merged["full"] is True
    assert merged["methods"]["lora"]["heldout_mse"] == [0.1, 0.2, 0.3]
    assert merged["summary"]["tsm1"]["heldout_mse"]["diff_mean"] == pytest.approx(-0.01)
    assert merge_documents([part(0, 0.1), part(1, 0.2, finished=False)])["full"] is False
    # a method missing on one seed is paired by seed, not by position
    gap = part(1, 0.2)
    gap["methods"]["tsm1"] = {}
    merged = merge_documents([part(0, 0.1), gap, part(2, 0.3)])
    assert merged["summary"]["tsm1"]["heldout_mse"]["n"] == 2
    assert merged["summary"]["tsm1"]["heldout_mse"]["diff_mean"] == pytest.approx(-0.01)
    with pytest.raises(ValueError, match="different configurations"):
        merge_documents([part(0, 0.1), {**part(1, 0.2), "configuration": "quick"}])
