"""Imports flow one way (docs/design.md, "Dependencies"): every import between two parts of the code
goes to a strictly lower layer, so no two parts import each other (no data -> data_tools -> data
cycle) and nothing imports the command line. Function-level imports count too."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from models.test_backbone_imports import _imports  # noqa: E402  (one import parser for both rules)

#: part → layer, lowest first; a part may import only parts of lower layers.
LAYERS: dict[str, int] = {
    "tsm_video.errors": 0,
    "tsm_video.fileio": 0,
    "tsm_video._lazy": 0,
    "tsm_video.tsm": 1,
    "tsm_video.diffusion": 1,
    "tsm_video.models": 2,
    "tsm_video.config": 3,
    "tsm_video.data": 4,
    "tsm_video.generation": 5,
    "tsm_video.export": 5,
    "eval_crafter": 5,
    "data_tools": 5,
    "tsm_video.train": 6,
    "tsm_video.demo": 7,
    "tsm_video.image_demo": 7,
    "tsm_video.cli": 8,
}
PACKAGES = ("tsm_video", "eval_crafter", "data_tools")


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tsm_video" and len(parts) > 1 else parts[0]


def _edges() -> set[tuple[str, str, str]]:
    """``(importing file, its part, imported part)`` for every import between two parts."""
    edges = set()
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            here = _part(".".join(path.relative_to(REPO).with_suffix("").parts))
            for name in _imports(path):
                if name.split(".")[0] in PACKAGES and name != "tsm_video" and _part(name) != here:
                    edges.add((str(path.relative_to(REPO)), here, _part(name)))
    return edges


def test_every_part_has_a_layer():
    parts = {p for _, here, there in _edges() for p in (here, there)}
    assert parts <= set(LAYERS), f"give these a layer (and a line in docs/design.md): {parts - set(LAYERS)}"


def test_imports_go_down_only():
    upward = sorted(
        f"{path}: {here} (layer {LAYERS[here]}) imports {there} (layer {LAYERS[there]})"
        for path, here, there in _edges()
        if LAYERS.get(there, -1) >= LAYERS.get(here, 99)
    )
    assert not upward, "\n".join(upward)


def test_the_rule_catches_a_cycle():
    # Not vacuous: a function-level import of data_tools inside tsm_video.data (the old cycle) is upward.
    fake = REPO / "tsm_video" / "data" / "x.py"
    imported = _imports(fake, "def f():\n    from data_tools.subset import make_subset\n")
    assert "data_tools.subset" in imported
    assert LAYERS[_part("data_tools.subset")] >= LAYERS[_part("tsm_video.data.x")]
