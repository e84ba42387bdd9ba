"""EvalCrafter scoring logic as pure functions: numpy in, numbers out.

The plain-named functions reproduce the official code (EvalCrafter cc66701 / 1275bda),
quirks included; they are what ``compat`` mode runs. ``fixed`` mode runs the ``*_fixed``
twins at the end of this file where the official logic is wrong, and the plain function
where it is not (``count_score``, ``action_score``). Every quirk reproduced here is listed in
docs/evalcrafter.md and pinned by tests/fixtures/evalcrafter/reference_cases.json.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from operator import itemgetter

import cv2
import numpy as np
import torch

__all__ = [
    "COLOR_BINS",
    "bleu_scores",
    "blip_bleu",
    "hue_to_color",
    "frame_avg_hue",
    "color_score",
    "count_per_frame",
    "count_score",
    "sintel_padding",
    "pair_flow_means",
    "motion_ac_score",
    "AMPLITUDE_THRESHOLD",
    "inception_split_scores",
    "inception_score",
    "top5",
    "action_score",
    "blip_bleu_fixed",
    "circular_mean_hue",
    "color_score_fixed",
    "REFERENCE_HW",
    "motion_ac_score_fixed",
    "inception_score_fixed",
]

_TINY = 1e-15  # pycocoevalcap BleuScorer constants
_SMALL = 1e-9


def _ngram_counts(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu_scores(hypothesis: str, reference: str, n: int = 4) -> list[float]:
    """BLEU-1..n of one hypothesis against one reference, as pycocoevalcap's ``Bleu(n)``.

    Whitespace tokens (``str.split``; no lowercasing, punctuation stays attached),
    clipped n-gram counts, smoothing ``(correct + 1e-15) / (guess + 1e-9)``, "closest"
    reference length (one reference: its length) and the brevity penalty
    ``exp(1 - r/c)`` applied when ``c < r``. Returns ``[BLEU-1, ..., BLEU-n]``.
    """
    hyp, ref = hypothesis.split(), reference.split()
    hyp_counts, ref_counts = _ngram_counts(hyp, n), _ngram_counts(ref, n)
    correct = [0] * n
    for gram, count in hyp_counts.items():
        correct[len(gram) - 1] += min(ref_counts.get(gram, 0), count)
    guess = [max(0, len(hyp) - k + 1) for k in range(1, n + 1)]
    scores, product = [], 1.0
    for k in range(n):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (len(hyp) + _TINY) / (len(ref) + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def blip_bleu(captions: list[str], prompt: str) -> float:
    """One video's BLIP-BLEU as ``Scores_with_CLIP.calculate_blip_bleu`` computes it (0..1).

    Captions are ``.strip()``ped; ``m_n = max over captions of max(BLEU-1..BLEU-n)`` (the
    official ``compute_max`` takes ``np.max`` over the whole ``[B1..Bn]`` list of every
    caption); the score is ``(m1 + m2 + m3 + m4) / 4`` -- usually the best BLEU-1.
    """
    per_caption = [bleu_scores(c.strip(), prompt, 4) for c in captions]
    maxima = [max(max(s[:n]) for s in per_caption) for n in range(1, 5)]
    return sum(maxima) / 4


COLOR_BINS: tuple[tuple[float, str], ...] = (
    (15, "red"),
    (22, "orange"),
    (39, "yellow"),
    (78, "green"),
    (131, "blue"),
)


def hue_to_color(avg_hue: float) -> str:
    """``detect_color_hue_based``: the first bin with ``avg < edge``, else ``"red"``.

    NaN compares false everywhere and so falls through to ``"red"`` (official quirk).
    """
    for edge, name in COLOR_BINS:
        if avg_hue < edge:
            return name
    return "red"


def frame_avg_hue(frame_rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean non-zero ``hue * mask`` of one frame, in the mask's own dtype.

    ``frame_rgb`` (H, W, 3) uint8 RGB; ``mask`` (H, W) object ids. A uint8 mask makes the
    product wrap mod 256 (id 2 on hue 128 gives 0 and drops out); a float64 mask does
    not. No non-zero product gives ``0/0 = NaN``.
    """
    hue = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)[:, :, 0]
    product = np.multiply(hue, mask)
    nonzero = np.count_nonzero(product)
    return float(product.sum() / nonzero) if nonzero else math.nan


def color_score(frames_rgb: np.ndarray, masks: list[np.ndarray], gt_color: str) -> float:
    """Fraction of frames whose binned mean mask hue equals ``gt_color`` (official rule).

    Args:
        frames_rgb: (F, H, W, 3) uint8 RGB, the processed frames.
        masks: F masks (H, W) of object ids, each in the dtype the tracker gave it.
        gt_color: ``attributes["color"].split()[0]``.
    """
    if len(frames_rgb) != len(masks):
        raise ValueError(f"{len(frames_rgb)} frames but {len(masks)} masks")
    if not len(masks):
        raise ValueError("color_score needs at least one frame")
    hits = [hue_to_color(frame_avg_hue(f, m)) == gt_color for f, m in zip(frames_rgb, masks)]
    return sum(hits) / len(hits)


def count_per_frame(masks: list[np.ndarray]) -> list[int]:
    """Number of distinct non-zero ids in each mask."""
    return [int(np.count_nonzero(np.unique(m))) for m in masks]


def count_score(masks: list[np.ndarray], gt_count: float | str) -> float:
    """``1 - min(1, mean_k |det_k - gt| / gt)``; the clip is applied after the mean."""
    gt = float(gt_count)
    if not masks:
        raise ValueError("count_score needs at least one frame")
    diffs = [abs(d - gt) / gt for d in count_per_frame(masks)]
    return 1 - min(1.0, sum(diffs) / len(diffs))


AMPLITUDE_THRESHOLD = 5.0  # px, at the video's own resolution (official)


def sintel_padding(h: int, w: int) -> tuple[int, int, int, int]:
    """RAFT ``InputPadder`` "sintel" padding ``(left, right, top, bottom)`` to multiples of 8."""
    ph, pw = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def pair_flow_means(flows: np.ndarray) -> list[float]:
    """``torch.norm(flow, dim=0).mean()`` per pair in float32; ``flows`` (P, 2, Hp, Wp)."""
    flows_t = torch.as_tensor(np.asarray(flows, dtype=np.float32))
    return [float(torch.norm(f, dim=0).mean().item()) for f in flows_t]


def motion_ac_score(flows: np.ndarray, amp: str) -> tuple[float, str, int]:
    """Official amplitude classification of one video.

    Args:
        flows: (P, 2, Hp, Wp) RAFT ``flow_up`` per consecutive pair, at the padded size
            (the replicate-padded border counts).
        amp: ground truth, ``"large"`` or ``"slow"``.

    Returns:
        ``(flow_score, amp_pred, score)``: the float64 mean of per-pair means (NaN with no
        pairs), ``"large"`` iff ``|flow_score| > 5`` (strict; NaN gives ``"slow"``), and
        ``int(amp_pred == amp)``.
    """
    means = pair_flow_means(flows)
    flow = float(np.mean(np.asarray(means, dtype=np.float64))) if means else math.nan
    pred = "large" if abs(flow) > AMPLITUDE_THRESHOLD else "slow"
    return flow, pred, int(pred == amp)


def inception_split_scores(probs: np.ndarray, splits: int = 10) -> np.ndarray:
    """Per-split ``exp(mean_rows KL(p || mean p))`` in float32; split i = rows ``i*N//s:(i+1)*N//s``.

    ``probs`` (N, C) softmax rows. An empty split gives NaN (official behaviour).
    """
    p = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    n = p.shape[0]
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        kl = part * (torch.log(part) - torch.log(part.mean(0, keepdim=True)))
        scores.append(torch.exp(kl.sum(1).mean()))
    return torch.stack(scores).numpy()


def inception_score(probs_per_video: list[np.ndarray], splits: int = 10) -> tuple[float, float]:
    """IS of all frames of all videos concatenated in the given order: ``(mean, std)``.

    ``probs_per_video[j]`` is (T_j, C). The std is unbiased (N-1). Fewer frames than
    splits give NaN for both (empty splits), exactly ``splits`` frames give ``(1, 0)``.
    """
    if not probs_per_video:
        raise ValueError("inception_score needs at least one video")
    scores = torch.from_numpy(inception_split_scores(np.concatenate(probs_per_video, 0), splits))
    return float(scores.mean().item()), float(scores.std().item())


def top5(pred_scores: np.ndarray) -> list[tuple[int, float]]:
    """``sorted(enumerate(scores), key=score, reverse=True)[:5]``: ties go to the lower index."""
    scores = np.asarray(pred_scores, dtype=np.float32).reshape(-1)
    return sorted(enumerate(scores.tolist()), key=itemgetter(1), reverse=True)[:5]


def action_score(
    pred_scores: np.ndarray, labels: list[str], gt_action: str, encode_text: Callable[[list[str]], np.ndarray]
) -> float:
    """Sum over the top-5 classes of ``prob * cos(text(label), text(gt_action))``, float32.

    Args:
        pred_scores: (400,) recogniser probabilities (raw; not renormalised over the top 5).
        labels: the 400 Kinetics class names (label_map_k400.txt order).
        gt_action: ``attributes["action"]``.
        encode_text: texts -> (N, D) features (CLIP ``get_text_features``).
    """
    best = top5(pred_scores)
    probs = torch.tensor([p for _, p in best], dtype=torch.float32)
    pred_feats = torch.as_tensor(np.asarray(encode_text([labels[i] for i, _ in best]), dtype=np.float32))
    gt_feats = torch.as_tensor(np.asarray(encode_text([gt_action]), dtype=np.float32))
    pred_feats = pred_feats / pred_feats.norm(p=2, dim=-1, keepdim=True)
    gt_feats = gt_feats / gt_feats.norm(p=2, dim=-1, keepdim=True)
    return float((probs.unsqueeze(0) @ (pred_feats @ gt_feats.T))[0, 0].item())


# ----------------------------------------------------------------------------------------
# fixed mode: the same measurements with the official bugs corrected


def blip_bleu_fixed(captions: list[str], prompt: str) -> float:
    """Real BLEU-1..4 average: ``mean_n max_caption BLEU-n`` (no max over lower orders)."""
    per_caption = [bleu_scores(c.strip(), prompt, 4) for c in captions]
    return sum(max(s[n] for s in per_caption) for n in range(4)) / 4


def circular_mean_hue(frame_rgb: np.ndarray, mask: np.ndarray) -> float:
    """Circular mean OpenCV hue (0..180) of the pixels where ``mask != 0``; NaN if none.

    Object ids only select pixels (no product, so no dtype wrap), hue 0 (red) counts, and
    red on both sides of 0/180 averages to red instead of cyan-ish 90.
    """
    hue = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)[:, :, 0].astype(np.float64)
    angles = hue[np.asarray(mask) != 0] * (2 * math.pi / 180)
    if not angles.size:
        return math.nan
    mean = math.atan2(np.sin(angles).mean(), np.cos(angles).mean())
    return (mean * 180 / (2 * math.pi)) % 180


def color_score_fixed(frames_rgb: np.ndarray, masks: list[np.ndarray], gt_color: str) -> float:
    """Fraction of frames whose circular mean mask hue bins to ``gt_color``.

    A frame with no object pixels is a miss (no NaN -> red fall-through).
    """
    if len(frames_rgb) != len(masks):
        raise ValueError(f"{len(frames_rgb)} frames but {len(masks)} masks")
    if not len(masks):
        raise ValueError("color_score_fixed needs at least one frame")
    hues = [circular_mean_hue(f, m) for f, m in zip(frames_rgb, masks)]
    hits = [not math.isnan(h) and hue_to_color(h) == gt_color for h in hues]
    return sum(hits) / len(hits)


REFERENCE_HW = (320, 512)  # the resolution the official 5 px threshold is read at


def motion_ac_score_fixed(
    flows: np.ndarray, amp: str, frame_hw: tuple[int, int], reference_hw: tuple[int, int] = REFERENCE_HW
) -> tuple[float, str, int]:
    """Amplitude class with the flow cropped to the frame and a resolution-normalised threshold.

    Args:
        flows: (P, 2, Hp, Wp) flows at the padded size; the sintel padding (centred, as
            ``InputPadder``) is cropped away so the replicated border no longer counts.
        amp: ground truth ``"large"`` / ``"slow"``.
        frame_hw: the video's (H, W).
        reference_hw: the resolution at which the threshold is 5 px; the threshold scales
            with the frame diagonal, so the same motion gets the same class at any size.

    Returns:
        ``(flow_score, amp_pred, score)``; a video without pairs raises ``ValueError``.
    """
    flows = np.asarray(flows, dtype=np.float32)
    if flows.shape[0] == 0:
        raise ValueError("motion_ac_score_fixed needs at least two frames")
    h, w = frame_hw
    top, left = (flows.shape[2] - h) // 2, (flows.shape[3] - w) // 2
    crop = flows[:, :, top : top + h, left : left + w]  # p 2 h w
    flow = float(np.mean(pair_flow_means(crop), dtype=np.float64))
    threshold = AMPLITUDE_THRESHOLD * math.hypot(h, w) / math.hypot(*reference_hw)
    pred = "large" if flow > threshold else "slow"
    return flow, pred, int(pred == amp)


def inception_score_fixed(probs_by_video: dict[str, np.ndarray], splits: int = 10) -> tuple[float, float]:
    """IS with a deterministic order (videos sorted by id) and an error below ``splits`` frames."""
    total = sum(len(p) for p in probs_by_video.values())
    if total < splits:
        raise ValueError(f"inception score needs at least {splits} frames, got {total}")
    return inception_score([probs_by_video[k] for k in sorted(probs_by_video)], splits)
