"""Training-state checkpoints: accelerate ``save_state``/``load_state``, written atomically, keep-last-K.

A checkpoint is ``<run dir>/checkpoints/step_<N>/``: accelerate's optimizer/scheduler/RNG files,
``trainable.safetensors`` (only the parameters that train — never the frozen 1.4B base) and
the registered objects, among them :class:`RankStates` (each rank's timestep/noise RNG and data
stream position, plus the step counter). It is written to a hidden temporary folder and
renamed into place only when complete, and older folders are removed only after that, so an
interrupted save never costs a checkpoint (accelerate's own ``total_limit`` deletes first).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file

__all__ = [
    "RankStates",
    "TrainProgress",
    "install_trainable_state_hooks",
    "save_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_resume",
    "TRAINABLE_FILE",
]

TRAINABLE_FILE = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class TrainProgress:
    """The optimizer-step counter (checkpointed)."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class RankStates:
    """Per-rank objects (RNG, stream position) saved for every rank through one registered object.

    accelerate writes registered objects from the main process only; ``state_dict`` therefore
    gathers every rank's states (a collective: every rank calls it inside ``save_state``) and
    ``load_state_dict`` restores this rank's own entry.
    """

    def __init__(self, accelerator: Accelerator, objects: dict[str, Any]) -> None:
        self.accelerator = accelerator
        self.objects = objects

    def state_dict(self) -> dict:
        mine = {name: obj.state_dict() for name, obj in self.objects.items()}
        ranks = gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]
        return {"ranks": ranks}

    def load_state_dict(self, state: dict) -> None:
        ranks = state["ranks"]
        if len(ranks) != self.accelerator.num_processes:
            raise ValueError(
                f"checkpoint was written by {len(ranks)} processes, this run has "
                f"{self.accelerator.num_processes}: resume with the same number of processes"
            )
        mine = ranks[self.accelerator.process_index]
        for name, obj in self.objects.items():
            obj.load_state_dict(mine[name])


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def install_trainable_state_hooks(accelerator: Accelerator) -> None:
    """Make ``save_state``/``load_state`` store only trainable parameters (``trainable.safetensors``).

    Loading is strict: the file must hold exactly the model's trainable parameters, same shapes.
    """

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            state = {}
            for i, model in enumerate(models):
                prefix = "" if i == 0 else f"model_{i}."
                state.update(
                    {prefix + k: v for k, v in _trainable_state(accelerator.unwrap_model(model)).items()}
                )
            save_file(state, str(Path(output_dir) / TRAINABLE_FILE))
        weights.clear()  # accelerate would otherwise write the whole model

    def load_hook(models: list, input_dir: str) -> None:
        path = Path(input_dir) / TRAINABLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {input_dir} is not a complete training checkpoint")
        state = load_file(str(path))
        for i, model in enumerate(models):
            prefix = "" if i == 0 else f"model_{i}."
            params = {n: p for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
            theirs = {k[len(prefix) :] for k in state if k.startswith(prefix)} if prefix else set(state)
            if i == 0:
                theirs = {k for k in theirs if not k.startswith("model_")}
            if theirs != set(params):
                missing, unexpected = sorted(set(params) - theirs), sorted(theirs - set(params))
                raise ValueError(
                    f"{path} does not match this stage's trainable parameters: "
                    f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
                )
            with torch.no_grad():
                for name, p in params.items():
                    src = state[prefix + name]
                    if src.shape != p.shape:
                        raise ValueError(
                            f"{path}: {name} has shape {tuple(src.shape)}, model {tuple(p.shape)}"
                        )
                    p.copy_(src)
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoint folders ``step_<N>`` under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, ckpt_root: str | Path, step: int, keep_last: int) -> Path:
    """``save_state`` into ``.tmp-step_<N>``, rename to ``step_<N>``, then keep the newest ``keep_last``."""
    root = Path(ckpt_root)
    final, tmp = root / f"step_{step}", root / f".tmp-step_{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(resume: str | bool | None, ckpt_root: str | Path) -> Path | None:
    """``--resume``: ``True``/"latest" → newest checkpoint of this stage (None if there is none);
    a path → that checkpoint folder (must exist and hold a complete state)."""
    if resume in (None, False):
        return None
    if resume in (True, "latest"):
        return latest_checkpoint(ckpt_root)
    path = Path(resume)
    if not (path / TRAINABLE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume {path}: not a checkpoint folder (no {TRAINABLE_FILE}); "
            f"checkpoints of this stage: {[p.name for p in list_checkpoints(ckpt_root)]}"
        )
    return path
