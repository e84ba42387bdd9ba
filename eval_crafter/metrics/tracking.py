"""The official Count/Color schedule: detect on frame 0 and every ``sam_gap``, track in between.

EvalCrafter's ``video_detection`` numbers the processed frames (raw 0, 5, 10, ...) p = 1,
2, ... and, per processed frame:

- p = 1: GroundingDINO + SAM (``detect_and_segment``); the id map is DeAOT's reference;
- p % 9 == 0 (``sam_gap // 5`` with ``sam_gap = 49``; raw frames 40, 85, ...): detection
  again, and DeAOT tracks the frame *without* a memory update; :func:`find_new_objects`
  keeps the detected segments that are new, the frame's map is ``tracked + new`` and it
  becomes a reference;
- otherwise: DeAOT tracks the frame and updates its memory with the result.

Ids follow ``SegTracker``: the number of tracked objects is the largest id ever referenced
(``get_obj_num``); detection ids at a re-detection start at that number (``curr_idx``), so
in compat mode the first new object gets the last tracked object's id and merges with it.
``fixed`` mode numbers new objects from the next free id instead. Dtypes are kept: a
frame whose re-detection found no box has a float64 map (``uint8 + float64``).
"""

from __future__ import annotations

import numpy as np

from eval_crafter.deaot import DeAOTTracker

__all__ = [
    "SAM_GAP",
    "REDETECT_EVERY",
    "MIN_AREA",
    "MIN_NEW_OBJECT_IOU",
    "MAX_OBJECTS",
    "MAX_NEW_AREA",
    "frame_roles",
    "find_new_objects",
    "track_video",
]

SAM_GAP = 49
REDETECT_EVERY = SAM_GAP // 5  # processed frames between detections (Num = 5)
MIN_AREA = 200
MIN_NEW_OBJECT_IOU = 0.8
MAX_OBJECTS = 255
MAX_NEW_AREA = 0.4  # fraction of the frame above which all new objects are dropped


def frame_roles(num_processed: int) -> list[str]:
    """Per processed frame ``"detect"`` (the first), ``"redetect"`` (p % 9 == 0) or ``"track"``."""
    roles = []
    for p in range(1, num_processed + 1):
        roles.append("detect" if p == 1 else "redetect" if p % REDETECT_EVERY == 0 else "track")
    return roles


def _official_ids(detected: np.ndarray, first_id: int) -> np.ndarray:
    """Detection ids 1..K as ``detect_and_seg`` numbers them from ``curr_idx``: k -> k + first_id - 1
    in the map's dtype (uint8 wraps as numpy 1 did; id 0 becomes background)."""
    if detected.dtype != np.uint8:
        return detected  # the float64 no-box map
    shifted = np.where(detected > 0, detected.astype(np.int64) + first_id - 1, 0)
    return (shifted % 256).astype(np.uint8)


def find_new_objects(
    tracked: np.ndarray, detected: np.ndarray, num_objects: int, mode: str = "compat"
) -> np.ndarray:
    """``SegTracker.find_new_objs`` plus the 40 % rule: the new-object id map to add to ``tracked``.

    Args:
        tracked: (H, W) uint8 ids DeAOT tracked on this frame.
        detected: (H, W) ``detect_and_segment`` map (uint8 ids 1..K, or float64 zeros).
        num_objects: ``curr_idx``, the largest id referenced so far.
        mode: ``compat`` numbers new objects from ``num_objects`` (the official off-by-one),
            ``fixed`` from ``num_objects + 1``.

    A segment is new when at least 80 % of it lies outside the tracked objects, that part
    covers at least 200 px, and fewer than 256 ids are in use; if the new objects together
    cover more than 40 % of the frame, none is kept. Returns an array of ``tracked == 0``
    times the detection map's dtype.
    """
    first = num_objects if mode == "compat" else num_objects + 1
    segments = _official_ids(detected, num_objects) if mode == "compat" else detected
    candidates = (tracked == 0) * segments
    new = np.zeros_like(candidates)
    next_id = first
    for seg_id in np.unique(candidates):
        if seg_id == 0:
            continue
        region = candidates == seg_id
        area = int(region.sum())
        outside = area / int((segments == seg_id).sum())
        if outside < MIN_NEW_OBJECT_IOU or area < MIN_AREA or next_id > MAX_OBJECTS:
            continue
        new[region] = next_id
        next_id += 1
    if np.sum(new > 0) > tracked.size * MAX_NEW_AREA:
        new = np.zeros_like(new)
    return new


def track_video(
    tracker: DeAOTTracker, frames: np.ndarray, detections: dict[int, np.ndarray], mode: str = "compat"
) -> list[np.ndarray]:
    """Id maps of the processed ``frames`` (P, H, W, 3) under the official schedule.

    ``detections`` maps the index of every "detect"/"redetect" frame to its
    ``detect_and_segment`` id map. Returns P maps (uint8, or float64 as the official code).
    """
    tracker.restart()
    referenced: set[int] = set()
    masks = []
    for index, role in enumerate(frame_roles(len(frames))):
        frame = frames[index]
        if role == "track":
            masks.append(tracker.track(frame, update_memory=True))
            continue
        if role == "detect":
            mask = detections[index]
        else:
            tracked = tracker.track(frame, update_memory=False)
            mask = tracked + find_new_objects(tracked, detections[index], tracker.num_objects, mode)
        referenced.update(int(i) for i in np.unique(mask) if i != 0)
        tracker.add_reference(frame, mask, max(referenced, default=0))
        masks.append(mask)
    return masks
