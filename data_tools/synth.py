"""Synthetic OpenVid-format dataset: moving coloured shapes with captions that name them.

Each video shows ``count`` shapes of one colour moving together in one direction at a slow or
fast speed; its caption says so ("three red circles moving fast to the left"). The generator
keeps the ground truth (attributes plus per-frame centres), and :func:`estimate_attributes`
reads the same attributes back from pixels, so generated clips of this domain can be scored
(colour, count, direction, speed) without any learned model.

Domains (``domain=``): ``"a"`` is the plain domain above (flat shapes of 6 colours, 1..3 of
them, fixed speeds, one dark background, static camera). ``"b"`` is the more varied corpus of
post-pretraining (:data:`DOMAINS`): 9 colours, 1..4 shapes, shape sizes and speeds jittered
around the named speed, striped or solid fills, a textured background of varying brightness,
and a panning camera (the background slides; the caption says so). ``"shifted"`` is ``"b"`` on
a bright background (a domain-adaptation variant). Same seed and domain → same files; domain
``"a"`` draws exactly what it always drew.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from tsm_video.data.index import OPENVID_COLUMNS
from tsm_video.data.video_io import write_mp4

__all__ = [
    "COLORS",
    "COLORS_B",
    "DOMAINS",
    "SHAPES",
    "SPEEDS",
    "DIRECTIONS",
    "SceneSpec",
    "foreground_mask",
    "sample_spec",
    "render_scene",
    "scene_masks",
    "estimate_attributes",
    "make_synthetic_dataset",
]

COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 220, 40),
    "white": (240, 240, 240),
    "purple": (160, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
SPEEDS = {"slow": 0.2, "fast": 0.6}  # displacement over the whole clip, as a fraction of the side
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: Domain B's palette: domain A's colours plus three more.
COLORS_B = {**COLORS, "orange": (245, 140, 30), "cyan": (40, 210, 225), "pink": (240, 100, 170)}
_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_BACKGROUND = (20, 20, 20)
_CAMERA = ("static", "pan left", "pan right", "pan up", "pan down")


@dataclass(frozen=True)
class Domain:
    """How varied a synthetic corpus is (see the module docstring)."""

    colors: dict[str, tuple[int, int, int]]
    max_count: int  # default upper bound on shapes per scene (any bound is clipped to 4)
    jitter: float  # relative jitter of speed and shape size (0 = the named values exactly)
    textures: tuple[str, ...]  # fills: "solid" | "striped"
    cameras: tuple[str, ...]  # "static" or "pan <direction>" (background slides the other way)
    background: tuple[int, int]  # background grey level range [lo, hi]
    texture_amplitude: int  # ± grey levels of the background texture (0 = flat)


DOMAINS: dict[str, Domain] = {
    "a": Domain(COLORS, 3, 0.0, ("solid",), ("static",), (20, 20), 0),
    "b": Domain(COLORS_B, 4, 0.25, ("solid", "striped"), _CAMERA, (5, 45), 12),
    "shifted": Domain(COLORS_B, 4, 0.25, ("solid", "striped"), _CAMERA, (200, 235), 12),
}


@dataclass(frozen=True)
class SceneSpec:
    """What a synthetic video shows.

    The first five fields are domain A's; the rest default to domain A's fixed values:
    ``travel``/``size`` scale the named speed's displacement and the shape radius, ``texture``
    is the fill, ``camera`` the background's pan, ``background`` its grey level and
    ``texture_amplitude`` the contrast of its texture.
    """

    color: str
    shape: str
    count: int
    speed: str
    direction: str
    travel: float = 1.0
    size: float = 1.0
    texture: str = "solid"
    camera: str = "static"
    background: int = _BACKGROUND[0]
    texture_amplitude: int = 0

    @property
    def caption(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        where = f"to the {self.direction}" if self.direction in ("left", "right") else self.direction
        fill = "striped " if self.texture == "striped" else ""
        text = f"{_WORDS[self.count]} {fill}{self.color} {noun} moving {self.speed} {where}"
        return text if self.camera == "static" else f"{text} as the camera pans {self.camera.split()[1]}"


def sample_spec(rng: np.random.Generator, max_count: int | None = None, domain: str = "a") -> SceneSpec:
    """A uniformly drawn scene of ``domain`` (count in 1..max_count, max 4; default: the
    domain's, 3 for A and 4 for B)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; valid: {', '.join(DOMAINS)}")
    dom = DOMAINS[domain]
    spec = SceneSpec(
        color=str(rng.choice(list(dom.colors))),
        shape=str(rng.choice(SHAPES)),
        count=int(rng.integers(1, min(max_count or dom.max_count, 4) + 1)),
        speed=str(rng.choice(list(SPEEDS))),
        direction=str(rng.choice(list(DIRECTIONS))),
    )
    if domain == "a":  # draws nothing more: domain A's files stay what they always were
        return spec
    lo, hi = dom.background
    return replace(
        spec,
        travel=float(rng.uniform(1 - dom.jitter, 1 + dom.jitter)),
        size=float(rng.uniform(1 - dom.jitter, 1 + dom.jitter)),
        texture=str(rng.choice(dom.textures)),
        camera=str(rng.choice(dom.cameras)),
        background=int(rng.integers(lo, hi + 1)),
        texture_amplitude=dom.texture_amplitude,
    )


def _radius(size: tuple[int, int], scale: float = 1.0) -> int:
    return max(2, int(min(size) * 0.07 * scale))


def _color_of(name: str) -> tuple[int, int, int]:
    return COLORS_B[name]


def _draw(frame: np.ndarray, shape: str, center: np.ndarray, radius: int, color) -> None:
    x, y = (int(round(v)) for v in center)
    if shape == "circle":
        cv2.circle(frame, (x, y), radius, color, -1, lineType=cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(frame, (x - radius, y - radius), (x + radius, y + radius), color, -1)
    else:
        pts = np.array([[x, y - radius], [x - radius, y + radius], [x + radius, y + radius]], np.int32)
        cv2.fillPoly(frame, [pts], color, lineType=cv2.LINE_AA)


def _stripes(frame: np.ndarray, mask: np.ndarray, color) -> None:
    """Darken every other pair of rows inside ``mask`` (H, W) bool: a striped fill of ``color``."""
    rows = (np.arange(frame.shape[0]) // 2 % 2 == 1)[:, None] & mask
    frame[rows] = (np.asarray(color, np.float64) * 0.55).astype(np.uint8)


def _background(spec: SceneSpec, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A (2H, 2W) grey texture to pan across (flat when ``texture_amplitude`` is 0)."""
    h, w = size
    base = np.full((2 * h, 2 * w), float(spec.background))
    if spec.texture_amplitude:
        coarse = rng.uniform(-1, 1, (max(2, h // 4), max(2, w // 4)))
        base += spec.texture_amplitude * cv2.resize(coarse, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    return np.clip(base, 0, 255).astype(np.uint8)


def render_scene(
    spec: SceneSpec,
    size: tuple[int, int] = (64, 64),
    num_frames: int = 24,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render → (frames (T, H, W, 3) uint8 RGB, centres (T, count, 2) float as (x, y) pixels).

    Shapes sit in separate lanes across the motion axis and start so they stay fully in view.
    """
    rng = rng or np.random.default_rng(0)
    h, w = size
    radius = _radius(size, spec.size)
    dx, dy = DIRECTIONS[spec.direction]
    along, across = (w, h) if dx else (h, w)
    travel = min(SPEEDS[spec.speed] * spec.travel, 0.8) * along
    margin = radius + 1
    start_lo, start_hi = margin, along - margin - travel
    lanes = np.linspace(0, across, spec.count + 2)[1:-1] + rng.uniform(-0.05, 0.05, spec.count) * across
    starts = rng.uniform(start_lo, max(start_lo, start_hi), spec.count)
    sign = dx + dy
    t = np.linspace(0, 1, num_frames)[:, None]  # (T, 1)
    along_pos = starts[None] + travel * t  # (T, count), moving towards +axis
    if sign < 0:
        along_pos = along - along_pos
    centres = np.empty((num_frames, spec.count, 2))
    centres[..., 0 if dx else 1] = along_pos
    centres[..., 1 if dx else 0] = lanes[None]
    color = _color_of(spec.color)
    plain = spec.camera == "static" and not spec.texture_amplitude
    texture = None if plain else _background(spec, size, rng)
    pan = np.zeros(2) if spec.camera == "static" else np.array(DIRECTIONS[spec.camera.split()[1]], float)
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        if texture is None:
            frames[i] = spec.background
        else:  # the camera pans by half a side over the clip: the background slides the other way
            ox, oy = (np.round((0.5 + pan * (t[i, 0] - 0.5) * 0.5) * np.array([w, h]))).astype(int)
            frames[i] = texture[oy : oy + h, ox : ox + w, None]
        for c in centres[i]:
            _draw(frames[i], spec.shape, c, radius, color)
        if spec.texture == "striped":
            mask = np.zeros((h, w), np.uint8)
            for c in centres[i]:
                _draw(mask, spec.shape, c, radius, 1)
            _stripes(frames[i], mask.astype(bool), color)
    return frames, centres


def scene_masks(spec: SceneSpec, centres: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-object masks (T, count, H, W) bool for the centres :func:`render_scene` returned."""
    h, w = size
    radius = _radius(size, spec.size)
    masks = np.zeros((*centres.shape[:2], h, w), np.uint8)
    for t, frame_centres in enumerate(centres):
        for k, c in enumerate(frame_centres):
            _draw(masks[t, k], spec.shape, c, radius, 1)
    return masks.astype(bool)


def foreground_mask(frames: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 255] (uint8 or float) → (...) bool: pixels whose summed channel
    distance from domain A's background exceeds 90 grey levels (the shapes)."""
    return np.abs(np.asarray(frames, np.float64) - np.asarray(_BACKGROUND, np.float64)).sum(-1) > 90


def estimate_attributes(frames: np.ndarray, min_area: int = 4) -> dict:
    """Read colour, count, direction and speed back from (T, H, W, 3) uint8 frames.

    Colour: nearest palette colour to the median foreground pixel. Count: median number of
    connected foreground blobs per frame. Direction/speed: mean centroid displacement from the
    first to the last frame, relative to the side along the motion (threshold half-way between
    the slow and fast travel). Returns None fields when nothing is visible.
    """
    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    fg = foreground_mask(frames)  # (T, H, W)
    if fg.sum() == 0:
        return {"color": None, "count": 0, "direction": None, "speed": None}
    pixels = frames[fg].astype(np.float64)
    median = np.median(pixels, axis=0)
    palette = np.array(list(COLORS.values()), np.float64)
    color = list(COLORS)[int(np.argmin(((palette - median) ** 2).sum(1)))]
    counts, centroids = [], []
    for mask in fg:
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = stats[1:, cv2.CC_STAT_AREA] >= min_area
        counts.append(int(keep.sum()))
        centroids.append(cents[1:][keep].mean(0) if keep.any() else None)
    visible = [c for c in centroids if c is not None]
    move = visible[-1] - visible[0] if len(visible) > 1 else np.zeros(2)
    if abs(move[0]) >= abs(move[1]):
        direction, travel = ("right" if move[0] > 0 else "left"), abs(move[0]) / w
    else:
        direction, travel = ("down" if move[1] > 0 else "up"), abs(move[1]) / h
    threshold = (SPEEDS["slow"] + SPEEDS["fast"]) / 2
    return {
        "color": color,
        "count": int(np.median(counts)),
        "direction": direction,
        "speed": "fast" if travel > threshold else "slow",
    }


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_videos: int = 16,
    seed: int = 0,
    size: tuple[int, int] = (64, 64),
    num_frames: int = 24,
    fps: float = 8.0,
    max_count: int | None = None,
    domain: str = "a",
) -> Path:
    """Write ``videos/*.mp4``, an OpenVid-format ``synthetic.csv`` and ``ground_truth.json``.

    Returns the CSV path. The ground truth maps each video name to its attributes, caption
    and per-frame centres ``(T, count, 2)``. Same seed and ``domain`` (:data:`DOMAINS`) → same
    files.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; valid: {', '.join(DOMAINS)}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(num_videos):
        spec = sample_spec(rng, max_count, domain)
        frames, centres = render_scene(spec, size, num_frames, rng)
        name = f"synth_{seed}_{i:05d}.mp4"
        write_mp4(out_dir / "videos" / name, frames, fps)
        rows.append(
            {
                "video": name,
                "caption": spec.caption,
                "aesthetic score": f"{rng.uniform(4, 6):.3f}",
                "motion score": f"{SPEEDS[spec.speed] * 10:.3f}",
                "temporal consistency score": f"{rng.uniform(0.9, 1.0):.4f}",
                "camera motion": spec.camera,
                "frame": num_frames,
                "fps": fps,
                "seconds": round(num_frames / fps, 3),
            }
        )
        truth[name] = {**asdict(spec), "caption": spec.caption, "centres": np.round(centres, 2).tolist()}
    csv_path = out_dir / "synthetic.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=OPENVID_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "ground_truth.json").write_text(json.dumps(truth))
    return csv_path
