"""Prompt sources, work sharding and per-clip seeds for `tsm-video generate`.

Two prompt file formats are read, detected from the content:

* plain text, one prompt per line (blank lines skipped); clip ids are the 0-based line
  numbers among the non-blank lines, zero-padded to 4 digits (``0000``, ``0001``, ...);
* EvalCrafter ``metadata.json``: a JSON object ``{id: {"prompt": str, "attributes": {...}}}``;
  clip ids are the object's keys (``0000`` ... ``0699``), kept in sorted order.

A clip's seed depends only on the base seed and the prompt text (a stable hash), so the same
``(prompt, seed)`` gives the same clip whatever the file, position, batch size or shard.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tsm_video.errors import TSMVideoError

__all__ = [
    "PromptItem",
    "PromptError",
    "read_prompts",
    "prompt_items",
    "parse_shard",
    "select_shard",
    "clip_seed",
]


class PromptError(TSMVideoError, ValueError):
    """A prompt source, shard spec or seed that cannot be used, with the reason."""


@dataclass(frozen=True)
class PromptItem:
    """One clip to generate: ``id`` names the output file (``{id}.mp4``), ``prompt`` is its text."""

    id: str
    prompt: str


def _check_id(clip_id: str, path: Path) -> str:
    if not clip_id or clip_id in {".", ".."} or any(ch in clip_id for ch in "/\\\0"):
        raise PromptError(f"{path}: prompt id {clip_id!r} cannot name a file")
    return clip_id


def _read_metadata(data: object, path: Path) -> list[PromptItem]:
    if not isinstance(data, dict):
        raise PromptError(
            f"{path}: a JSON prompt file must be an EvalCrafter metadata object "
            f'{{id: {{"prompt": ...}}}}, got {type(data).__name__}'
        )
    items = []
    for clip_id in sorted(data):
        entry = data[clip_id]
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f'{path}: entry {clip_id!r} has no non-empty "prompt" string')
        items.append(PromptItem(_check_id(str(clip_id), path), prompt.strip()))
    return items


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Read a plain-text (one prompt per line) or EvalCrafter ``metadata.json`` prompt file.

    Raises :class:`PromptError` for a missing file, a file that is not UTF-8, an empty file, a
    JSON file that is not an EvalCrafter metadata object, or an entry without a prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is no part of the first prompt
    except UnicodeDecodeError as err:
        raise PromptError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            f"save the file as UTF-8"
        ) from err
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PromptError(f"{path}: looks like JSON but does not parse ({err})") from err
        items = _read_metadata(data, path)
    else:
        lines = [line.strip() for line in text.splitlines()]
        items = [PromptItem(f"{i:04d}", p) for i, p in enumerate(p for p in lines if p)]
    if not items:
        raise PromptError(f"{path}: no prompts in file")
    return items


def parse_shard(spec: str) -> tuple[int, int]:
    """Parse ``"i/k"`` (0-based shard ``i`` of ``k``) into ``(i, k)``."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PromptError(f"--shard must look like i/k (e.g. 0/4), got {spec!r}")
    index, count = (int(p) for p in parts)
    if count < 1 or not 0 <= index < count:
        raise PromptError(f"--shard {spec}: need k >= 1 and 0 <= i < k")
    return index, count


def select_shard(items: list[PromptItem], index: int, count: int) -> list[PromptItem]:
    """Shard ``index`` of ``count``: items at positions ``index, index+count, ...``.

    Across the ``count`` shards every item appears exactly once (round robin keeps the
    shards' work within one clip of each other).
    """
    if count < 1 or not 0 <= index < count:
        raise PromptError(f"shard {index}/{count}: need k >= 1 and 0 <= i < k")
    return items[index::count]


def clip_seed(base_seed: int, prompt: str) -> int:
    """Seed of one clip: a stable 63-bit hash of ``(base_seed, prompt)`` (not Python's ``hash``)."""
    digest = hashlib.sha256(f"{int(base_seed)}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def prompt_items(prompts: list[str]):
    """``--prompt`` texts → items named by a slug of the text (``a_cat_on_a_bike``), duplicates dropped."""
    from tsm_video.generation.prompts import PromptError, PromptItem

    items: dict[str, PromptItem] = {}
    for prompt in (p.strip() for p in prompts):
        if not prompt:
            raise PromptError("--prompt is empty")
        slug = "_".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:80].strip("_") or "prompt"
        if slug in items and items[slug].prompt != prompt:
            raise PromptError(
                f"prompts {items[slug].prompt!r} and {prompt!r} would share the file name "
                f"{slug}.mp4; write them to a --prompts file instead"
            )
        items[slug] = PromptItem(slug, prompt)
    return list(items.values())
