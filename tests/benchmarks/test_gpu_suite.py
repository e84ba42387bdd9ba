"""benchmarks/gpu_suite.py's CPU dry run: every part runs end to end at tiny sizes, writes the JSON
it is asked for and leaves benchmarks/RESULTS.md alone."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_measures_every_part_and_writes_no_results_md(tmp_path):
    results_md = ROOT / "benchmarks" / "RESULTS.md"
    before = results_md.read_bytes()
    out = tmp_path / "gpu_suite.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=900,
    )
    assert results_md.read_bytes() == before
    record = json.loads(out.read_text())
    parts = record["parts"]
    assert record["dry_run"] and set(parts) == {"train", "sampling", "attention", "tsm_layer", "generate"}
    train = parts["train"]["results"]
    assert set(train) == {"lora_b1", "foster_b1", "assemble_b1"}
    assert train["foster_b1"]["trainable_params"] == 8 * train["lora_b1"]["trainable_params"]  # 8 experts
    assert all(r["seconds_per_step"] > 0 for r in train.values())
    assert parts["sampling"]["max_abs_diff"] == 0.0  # the dry run samples both in float32
    attention = parts["attention"]["results"]
    assert set(attention) == {"sdpa", "math"} and attention["math"]["max_abs_diff_vs_sdpa"] < 1e-4
    for part in ("tsm_layer", "generate"):
        assert all(math.isfinite(v) and v > 0 for v in parts[part]["ratios"].values())
