import json
from dataclasses import dataclass

import torch
from safetensors import safe_open

from tsm_video.demo.recipe_io import save_recipe_weights


@dataclass
class _Recipe:
    steps: int = 3
    lr: float = 1e-3


def test_weights_carry_their_recipe_stats_and_command(tmp_path):
    path = tmp_path / "w.safetensors"
    state = {"a": torch.arange(6, dtype=torch.float32).view(2, 3)}
    save_recipe_weights(state, path, _Recipe(), {"loss": 0.5}, "python -m x", torch_threads="2")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert torch.equal(f.get_tensor("a"), state["a"])
    assert json.loads(meta["recipe"]) == {"steps": 3, "lr": 1e-3}
    assert json.loads(meta["stats"]) == {"loss": 0.5}
    assert (meta["command"], meta["torch_threads"]) == ("python -m x", "2")
