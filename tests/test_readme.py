"""The README's runnable example does what it says (it is executed, not just parsed)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tsm_video.tsm import read_adapter_metadata

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_tsm_example_runs_and_trains_only_the_experts(tmp_path, monkeypatch):
    example = next(block for block in _python_blocks() if "configure_stage" in block)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)

    vc2 = namespace["vc2"]
    with_grad = {name for name, p in vc2.named_parameters() if p.grad is not None}
    assert with_grad, "the example's backward reached no parameter"
    assert all(".lora_A." in name or ".lora_B." in name for name in with_grad)
    meta = read_adapter_metadata(tmp_path / "foster_s8.safetensors")
    assert meta["stage"] == "foster" and meta["backbone"] == "vc2-tiny"
