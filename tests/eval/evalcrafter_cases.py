"""Shared helpers for the eval tests: the EvalCrafter reference cases and decoders."""

from __future__ import annotations

import base64
import io
import json
from functools import cache
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evalcrafter"


@cache
def reference_cases() -> dict:
    """tests/fixtures/evalcrafter/reference_cases.json (made by the official scoring code)."""
    return json.loads((FIXTURES / "reference_cases.json").read_text(encoding="utf-8"))


def cases(section: str) -> list[dict]:
    return reference_cases()[section]


def npy(b64: str) -> np.ndarray:
    """Decode one ``*_npy_b64`` field."""
    return np.load(io.BytesIO(base64.b64decode(b64)), allow_pickle=False)


def typed_masks(case_input: dict) -> list[np.ndarray]:
    """Masks cast to the dtype the official mask had (README: cast before multiplying)."""
    masks = npy(case_input["masks_npy_b64"])
    return [masks[k].astype(dtype) for k, dtype in enumerate(case_input["mask_dtypes"])]
