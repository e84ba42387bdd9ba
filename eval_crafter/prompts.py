"""EvalCrafter prompt metadata shipped with the package, and the text each mode reads.

``assets/metadata.json`` is a byte-for-byte copy of the official file (700 prompts with
their ``attributes``): the canonical prompt list. The official scripts do not read it for
the prompt text, though: they read ``prompts/<video name>.txt``, and at the official HEAD
(1275bda, since commit ea0f7f2 "Update bugs") 100 of those files differ from
metadata.json (words dropped or shuffled). ``compat`` mode reproduces that and uses the
HEAD text for those ids (``assets/prompts_corrupted_ids.json``); ``fixed`` mode uses the
metadata prompt. Ground-truth attributes always come from metadata.json, in both modes.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from eval_crafter.errors import EvalInputError

__all__ = [
    "ATTRIBUTE_KEYS",
    "load_metadata",
    "load_kinetics_labels",
    "corrupted_prompts",
    "prompt_for_mode",
    "entries_for_mode",
]

ATTRIBUTE_KEYS = ("face", "text", "color", "count", "amp", "action")


def _asset(name: str) -> str:
    return resources.files("eval_crafter").joinpath("assets", name).read_text(encoding="utf-8")


def load_metadata(path: str | Path | None = None) -> dict[str, dict]:
    """``{id: {"prompt": str, "attributes": {...}}}`` from ``path`` or the packaged official file.

    A custom file must have the same format; every entry needs a string ``prompt`` and a
    dict ``attributes`` whose keys are among :data:`ATTRIBUTE_KEYS`.
    """
    text = _asset("metadata.json") if path is None else Path(path).read_text(encoding="utf-8")
    source = "packaged metadata.json" if path is None else str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{source}: not JSON ({err})") from err
    if not isinstance(data, dict) or not data:
        raise EvalInputError(f"{source}: expected a non-empty JSON object keyed by prompt id")
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise EvalInputError(f"{source}: entry {key!r} needs a string 'prompt'")
        attributes = entry.get("attributes", {})
        if not isinstance(attributes, dict):
            raise EvalInputError(f"{source}: entry {key!r}: 'attributes' must be an object")
        unknown = set(attributes) - set(ATTRIBUTE_KEYS)
        if unknown:
            raise EvalInputError(
                f"{source}: entry {key!r}: unknown attributes {sorted(unknown)}; "
                f"known: {list(ATTRIBUTE_KEYS)}"
            )
    return data


@cache
def load_kinetics_labels() -> tuple[str, ...]:
    """The 400 Kinetics class names; index i is class i (official label_map_k400.txt)."""
    labels = tuple(line.strip() for line in _asset("label_map_k400.txt").splitlines())
    if len(labels) != 400:
        raise ValueError(f"label_map_k400.txt has {len(labels)} lines, expected 400")
    return labels


@cache
def corrupted_prompts() -> dict[str, str]:
    """``{id: text of prompts/<id>.txt at the official HEAD}`` for the 100 differing ids."""
    data = json.loads(_asset("prompts_corrupted_ids.json"))
    return {p["id"]: p["head_prompt_txt"] for p in data["prompts"]}


def prompt_for_mode(video_id: str, entry: dict, mode: str, official: bool = True) -> str:
    """The prompt text a metric reads for ``video_id`` in ``mode``.

    ``compat`` with the official metadata gives what the official main reads
    (``prompts/<id>.txt`` at HEAD, i.e. the corrupted text for the 100 listed ids);
    ``fixed``, or any custom metadata file (``official=False``), gives ``entry["prompt"]``.
    """
    if mode == "compat" and official:
        return corrupted_prompts().get(video_id, entry["prompt"].strip())
    return entry["prompt"]


def entries_for_mode(metadata: dict[str, dict], mode: str, official: bool = True) -> dict[str, dict]:
    """Metadata entries as metrics receive them: ``prompt`` resolved for ``mode``,
    ``metadata_prompt`` the original text, ``attributes`` unchanged."""
    return {
        key: {
            "prompt": prompt_for_mode(key, entry, mode, official),
            "metadata_prompt": entry["prompt"],
            "attributes": dict(entry.get("attributes", {})),
        }
        for key, entry in metadata.items()
    }
