"""Generate ``tests/fixtures/deaot/``: the official DeAOT code's outputs on small inputs.

Run once against the aot code EvalCrafter vendors (BSD-3-Clause; the directory holding
``networks/`` and ``dataloaders/``, e.g. ``EvalCrafter/metrics/Segment-and-Track-Anything/aot``
or a checkout of yoxu515/aot-benchmark)::

    python tests/tools/make_deaot_fixtures.py /path/to/aot

Nothing of that code is stored here. The official R50-DeAOT-L model gets deterministic
weights (:func:`deaot_state_dict`, from its keys and shapes), and is driven the way
EvalCrafter's Segment-and-Track calls it (reference frame, tracked frames with memory
updates, a re-detection reference), on synthetic frames (:func:`synthetic_frames` and
:func:`rectangle_mask` rebuild them in the test). Saved: the official state-dict manifest
(keys and shapes), the network input sizes for a list of frame sizes, one preprocessed
frame, and per tracked frame the per-group stride-4 logits and the tracked id map.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_unet_variants import seeded_state_dict  # noqa: E402

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "deaot"
OFFICIAL = "EvalCrafter 1275bda metrics/Segment-and-Track-Anything/aot (aot-benchmark fork, BSD-3-Clause)"
FRAME_SIZE = (40, 280)  # network input 33 x 273: a 3 x 18 token grid, wider than the 15-token window
SIZES = [(40, 280), (256, 256), (320, 512), (480, 854), (576, 1024), (1080, 1920), (33, 49), (17, 300)]
# scenario: (reference mask ids per rectangle, re-detection mask ids, frames)
SCENARIOS = {
    "grow": {"first": [1, 2, 3], "second": list(range(1, 13)), "frames": 6, "seed": 0},
    "same": {"first": [1, 2], "second": [1, 2], "frames": 5, "seed": 1},
}
REDETECT_AT = 3  # frame index of the second reference (tracked first, as the official schedule)


def deaot_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 7) -> dict[str, torch.Tensor]:
    """``seeded_state_dict`` with positive batch-norm variances (``1 + |x|``)."""
    state = seeded_state_dict(shapes, seed)
    for key in state:
        if key.endswith("running_var"):
            state[key] = 1.0 + state[key].abs()
    return state


def synthetic_frames(num: int, seed: int) -> np.ndarray:
    """(num, 40, 280, 3) uint8: noisy background, coloured rectangles drifting right."""
    rng = np.random.default_rng(seed)
    h, w = FRAME_SIZE
    frames = rng.integers(0, 60, (num, h, w, 3), dtype=np.uint8)
    for t in range(num):
        for k in range(12):
            x = 4 + 22 * k + 2 * t
            frames[t, 6 + (k % 3) * 10 : 14 + (k % 3) * 10, x : x + 14] = (
                (37 * k) % 256,
                (91 * k) % 256,
                200,
            )
    return frames


def rectangle_mask(ids: list[int], t: int) -> np.ndarray:
    """(40, 280) uint8: rectangle k of the frames painted with ``ids[k]``."""
    mask = np.zeros(FRAME_SIZE, dtype=np.uint8)
    for k, obj in enumerate(ids):
        x = 4 + 22 * k + 2 * t
        mask[6 + (k % 3) * 10 : 14 + (k % 3) * 10, x : x + 14] = obj
    return mask


def main(aot_root: str) -> None:
    sys.path.insert(0, aot_root)
    import torch.nn.functional as F
    from dataloaders import video_transforms as tr  # the official code, for reference only
    from networks.engines import build_engine
    from networks.models import build_vos_model
    from torchvision import transforms

    torch.set_num_threads(2)
    cfg = importlib.import_module("configs.pre_ytb_dav").EngineConfig("fixture", "r50_deaotl")
    model = build_vos_model(cfg.MODEL_VOS, cfg).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(deaot_state_dict(shapes), strict=True)
    transform = transforms.Compose(
        [
            tr.MultiRestrictSize(
                cfg.TEST_MAX_SHORT_EDGE,
                cfg.TEST_MAX_LONG_EDGE,
                cfg.TEST_FLIP,
                cfg.TEST_MULTISCALE,
                cfg.MODEL_ALIGN_CORNERS,
            ),
            tr.MultiToTensor(),
        ]
    )
    tensors: dict[str, torch.Tensor] = {}
    sizes = {}
    for h, w in SIZES:
        sample = transform({"current_img": np.zeros((h, w, 3), np.uint8)})
        sizes[f"{h}x{w}"] = list(sample[0]["current_img"].shape[-2:])
    frame = synthetic_frames(1, 9)[0]
    tensors["preprocessed"] = transform({"current_img": frame})[0]["current_img"].float()[None]
    tensors["preprocessed.frame"] = torch.from_numpy(frame)

    with torch.no_grad():
        for name, spec in SCENARIOS.items():
            engine = build_engine(
                cfg.MODEL_ENGINE,
                phase="eval",
                aot_model=model,
                gpu_id=0,
                short_term_mem_skip=1,
                long_term_mem_gap=9999,
                max_len_long_term=9999,
            )
            frames = synthetic_frames(spec["frames"], spec["seed"])
            for t, frame in enumerate(frames):
                if t == 0 or t == REDETECT_AT:
                    ids = spec["first"] if t == 0 else spec["second"]
                    if t == REDETECT_AT:  # the official re-detection frame is tracked (no update) first
                        tracked = _track(engine, transform, frame, False, F)
                        _save(tensors, f"{name}.{t}.before_reference", engine, tracked)
                    mask = rectangle_mask(ids, t)
                    sample = transform({"current_img": frame, "current_label": mask})
                    image = sample[0]["current_img"].unsqueeze(0).float()
                    label = sample[0]["current_label"].unsqueeze(0).float()
                    label = F.interpolate(label, size=image.shape[-2:], mode="nearest")
                    engine.add_reference_frame(image, label, obj_nums=int(mask.max()), frame_step=0)
                else:
                    tracked = _track(engine, transform, frame, True, F)
                    _save(tensors, f"{name}.{t}", engine, tracked)

    from safetensors.torch import save_file

    HERE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, HERE / "deaot_parity.safetensors")
    record = {
        "what": "official R50-DeAOT-L (aot code vendored by EvalCrafter) on synthetic frames "
        "(make_deaot_fixtures.py)",
        "official": OFFICIAL,
        "weights": "not stored: deaot_state_dict(official state_dict shapes, seed=7)",
        "state_dict": {k: list(v) for k, v in shapes.items()},
        "input_sizes": sizes,
        "scenarios": SCENARIOS,
        "redetect_at": REDETECT_AT,
        "schedule": "frame 0 reference; other frames tracked with update_memory; at redetect_at the frame is "
        "tracked without update, then added as a reference with the 'second' ids",
        "saved_per_tracked_frame": "<scenario>.<t>.logits.<g> (group g stride-4 logits, unused ids -1e10), "
        "<scenario>.<t>.labels (uint8 tracked ids at the frame size)",
        "env": {
            "torch": torch.__version__,
            "threads": 2,
            "mode": "eval, no_grad, float32, CPU, unfold local attention",
        },
    }
    (HERE / "deaot_parity.json").write_text(json.dumps(record, indent=1) + "\n")


def _track(engine, transform, frame: np.ndarray, update: bool, F) -> torch.Tensor:
    """What EvalCrafter's tracker does per frame: propagate, logits at the frame size, argmax."""
    image = transform({"current_img": frame})[0]["current_img"].unsqueeze(0).float()
    engine.match_propogate_one_frame(image)
    logits = engine.decode_current_logits(frame.shape[:2])
    labels = torch.argmax(logits, dim=1, keepdim=True).float()
    if update:
        engine.update_memory(labels)
    return labels


def _save(tensors: dict, prefix: str, engine, labels: torch.Tensor) -> None:
    for g, group in enumerate(engine.aot_engines):
        tensors[f"{prefix}.logits.{g}"] = group.pred_id_logits.float().clone()
    tensors[f"{prefix}.labels"] = labels[0, 0].to(torch.uint8)


if __name__ == "__main__":
    main(sys.argv[1])
