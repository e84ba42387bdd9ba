"""Prompt metadata for the synthetic shapes domain (``data_tools.synth``), in the
EvalCrafter ``metadata.json`` format, so the light backend can score demo videos.

Each synthetic scene becomes one prompt id (``0000`` ... in sorted video-name order):
``prompt`` is its caption, ``attributes`` hold ``color`` ("red circle"), ``count``
("3 circle") and ``amp`` ("large" for the fast speed, "slow" for the slow one); ``video``
keeps the synthetic file name.
"""

from __future__ import annotations

from eval_crafter.errors import EvalInputError

__all__ = ["SPEED_TO_AMP", "synthetic_metadata"]

SPEED_TO_AMP = {"fast": "large", "slow": "slow"}


def synthetic_metadata(ground_truth: dict[str, dict]) -> dict[str, dict]:
    """``ground_truth.json`` of ``make_synthetic_dataset`` -> ``{id: {"prompt", "attributes", "video"}}``."""
    if not isinstance(ground_truth, dict) or not all(isinstance(s, dict) for s in ground_truth.values()):
        raise EvalInputError("ground truth: expected the object of ground_truth.json, {video name: scene}")
    metadata = {}
    for i, name in enumerate(sorted(ground_truth)):
        scene = ground_truth[name]
        try:
            speed = SPEED_TO_AMP[scene["speed"]]
            attributes = {
                "color": f"{scene['color']} {scene['shape']}",
                "count": f"{scene['count']} {scene['shape']}",
                "amp": speed,
            }
            caption = scene["caption"]
        except KeyError as err:
            raise EvalInputError(f"ground truth of {name!r} lacks or has a bad {err}") from err
        metadata[f"{i:04d}"] = {"prompt": caption, "attributes": attributes, "video": name}
    return metadata
