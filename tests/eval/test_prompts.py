"""Packaged metadata, Kinetics labels and the prompt text each mode reads."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from evalcrafter_cases import FIXTURES

from eval_crafter.prompts import (
    corrupted_prompts,
    entries_for_mode,
    load_kinetics_labels,
    load_metadata,
    prompt_for_mode,
)


def test_packaged_metadata_is_the_official_file():
    from importlib import resources

    packaged = resources.files("eval_crafter").joinpath("assets", "metadata.json").read_bytes()
    assert packaged == (FIXTURES / "metadata.json").read_bytes()
    assert hashlib.sha256(packaged).hexdigest().startswith("25cfc224")
    meta = load_metadata()
    assert len(meta) == 700 and list(meta)[:2] == ["0000", "0001"]
    counts = Counter(k for e in meta.values() for k in e["attributes"])
    assert counts == {"face": 54, "count": 50, "action": 50, "text": 50, "amp": 50, "color": 46}


def test_kinetics_labels():
    labels = load_kinetics_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and labels[-1] == "zumba"


def test_compat_reads_the_corrupted_head_prompts():
    meta = load_metadata()
    corrupted = corrupted_prompts()
    assert len(corrupted) == 100
    assert prompt_for_mode("0002", meta["0002"], "compat") == "in goldfish glass"
    assert prompt_for_mode("0002", meta["0002"], "fixed") == "goldfish in glass"
    assert prompt_for_mode("0000", meta["0000"], "compat") == meta["0000"]["prompt"]
    # a custom metadata file is never rewritten, in either mode
    assert prompt_for_mode("0002", meta["0002"], "compat", official=False) == "goldfish in glass"
    entries = entries_for_mode(meta, "compat")
    differing = [k for k, e in entries.items() if e["prompt"] != e["metadata_prompt"].strip()]
    assert sorted(differing) == sorted(corrupted)
    assert entries["0001"]["attributes"] == meta["0001"]["attributes"]


def test_custom_metadata_validation(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"0000": {"prompt": "a red circle", "attributes": {"color": "red circle"}}}))
    assert load_metadata(good)["0000"]["attributes"] == {"color": "red circle"}
    for bad, message in [
        ([], "non-empty JSON object"),
        ({"0000": {"attributes": {}}}, "needs a string 'prompt'"),
        ({"0000": {"prompt": "x", "attributes": {"speed": "fast"}}}, "unknown attributes"),
    ]:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            load_metadata(path)
