"""Synthetic compositional image–caption data: coloured shapes with captions naming colour,
shape, count and position ("two red circles on the left"), written as an ``imagefolder``
(images + ``metadata.jsonl``, the layout ``data.source: images`` reads).

:func:`estimate_scene` reads colour, count and side back from pixels (no learned model), so the
demo can score generated images of this domain.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "COLORS",
    "SHAPES",
    "COUNTS",
    "SIDES",
    "ImageScene",
    "sample_scene",
    "draw_scene",
    "make_shapes_dataset",
    "estimate_scene",
]

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
COUNTS = {1: "one", 2: "two", 3: "three"}
SIDES = ("left", "right")
_BACKGROUND = (235, 235, 235)


@dataclass(frozen=True)
class ImageScene:
    color: str
    shape: str
    count: int
    side: str

    @property
    def caption(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        return f"{COUNTS[self.count]} {self.color} {noun} on the {self.side}"


def sample_scene(rng: np.random.Generator) -> ImageScene:
    return ImageScene(
        str(rng.choice(list(COLORS))),
        str(rng.choice(SHAPES)),
        int(rng.integers(1, 4)),
        str(rng.choice(SIDES)),
    )


def draw_scene(scene: ImageScene, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8: the scene's shapes stacked vertically in its half of the image."""
    image = np.full((size, size, 3), _BACKGROUND, np.uint8)
    r = max(2, size // 10)
    cx = size // 4 if scene.side == "left" else 3 * size // 4
    color = tuple(int(c) for c in COLORS[scene.color])
    for k in range(scene.count):
        cy = int((k + 1) * size / (scene.count + 1))
        x = int(cx + rng.integers(-r // 2, r // 2 + 1))
        if scene.shape == "circle":
            cv2.circle(image, (x, cy), r, color, -1, lineType=cv2.LINE_AA)
        elif scene.shape == "square":
            cv2.rectangle(image, (x - r, cy - r), (x + r, cy + r), color, -1)
        else:
            pts = np.array([(x, cy - r), (x - r, cy + r), (x + r, cy + r)], np.int32)
            cv2.fillPoly(image, [pts], color, lineType=cv2.LINE_AA)
    return image


def make_shapes_dataset(root: str | Path, num_images: int, size: int = 64, seed: int = 0) -> Path:
    """Write ``num_images`` PNGs and ``metadata.jsonl`` (``file_name``, ``text`` and the scene's
    attributes) into ``root``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        scene = sample_scene(rng)
        name = f"{i:05d}.png"
        Image.fromarray(draw_scene(scene, size, rng)).save(root / name)
        rows.append({"file_name": name, "text": scene.caption, **asdict(scene)})
    tmp = root / ".metadata.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(root / "metadata.jsonl")
    return root


def estimate_scene(image: np.ndarray) -> dict:
    """Colour (nearest palette entry of the non-background pixels), side (their mean column) and
    count (connected components) of an (H, W, 3) uint8 image; ``color`` None when it is blank."""
    diff = np.abs(image.astype(np.int16) - np.array(_BACKGROUND, np.int16)).sum(-1)
    mask = diff > 120
    if mask.sum() < 4:
        return {"color": None, "side": None, "count": 0}
    mean = image[mask].astype(np.float64).mean(0)
    color = min(COLORS, key=lambda c: float(np.sum((np.array(COLORS[c]) - mean) ** 2)))
    side = "left" if np.nonzero(mask)[1].mean() < image.shape[1] / 2 else "right"
    count, _ = cv2.connectedComponents(mask.astype(np.uint8))
    return {"color": color, "side": side, "count": int(count) - 1}
