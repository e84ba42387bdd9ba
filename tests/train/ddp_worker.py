"""Run by tests/train/test_train_runs.py under `accelerate launch --num_processes 2 --cpu`:
train one stage and write this rank's consumed clip ids and final trainable-weights digest."""

import json
import sys
from pathlib import Path

from accelerate import PartialState

from tsm_video.config import load_config
from tsm_video.train.runner import run_training

if __name__ == "__main__":
    cfg_path, out = sys.argv[1], Path(sys.argv[2])
    (result,) = run_training(load_config(cfg_path), print_fn=lambda s: None)
    state = PartialState()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{state.process_index}.json").write_text(
        json.dumps({"world": state.num_processes, "ids": result.sample_ids, "digest": result.digest})
    )
