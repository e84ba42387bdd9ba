"""The demo's output folder: it deletes only what it created (issue 14, "Data loss")."""

from __future__ import annotations

import json

import pytest

from tsm_video.demo import run_demo
from tsm_video.demo.outdir import MARKER, OutputDirError, claim_output_dir, record_entries


def _project(tmp_path):
    """A user's project folder: a real recipe's run output and a notes file."""
    project = tmp_path / "project"
    (project / "runs" / "vc2" / "foster_s8").mkdir(parents=True)
    (project / "runs" / "vc2" / "foster_s8" / "adapter.safetensors").write_bytes(b"weights")
    (project / "notes.txt").write_text("mine")
    return project


def _snapshot(root):
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*")
    )


def test_demo_refuses_a_folder_it_did_not_create(tmp_path):
    project = _project(tmp_path)
    before = _snapshot(project)
    with pytest.raises(OutputDirError, match="not empty and was not created by `tsm-video demo`"):
        run_demo(project)
    assert _snapshot(project) == before  # nothing deleted, nothing written (no marker either)


def test_cli_says_it_in_one_line_and_exits_2(tmp_path, capsys):
    from tsm_video.cli import main

    project = _project(tmp_path)
    before = _snapshot(project)
    assert main(["demo", "--out", str(project)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tsm-video demo: error: output folder") and "\n" not in err
    assert "nothing was deleted" in err and _snapshot(project) == before


def test_demo_refuses_a_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        run_demo(target)
    assert target.read_text() == "x"


def test_new_and_empty_folders_are_claimed_and_marked(tmp_path):
    for path in (tmp_path / "new" / "nested", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir()
        claim_output_dir(path, "cmd")
        assert json.loads((path / MARKER).read_text()) == {"command": "cmd", "entries": []}


def test_rerun_removes_only_recorded_entries(tmp_path):
    out = claim_output_dir(tmp_path / "out", "cmd")
    record_entries(out, "cmd", ["runs", "report.md"])
    (out / "runs" / "x").mkdir(parents=True)
    (out / "report.md").write_text("old")
    (out / "user.txt").write_text("added by the user")  # not recorded: must survive
    claim_output_dir(out, "cmd")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "user.txt"]


def test_another_commands_folder_is_refused(tmp_path):
    out = claim_output_dir(tmp_path / "out", "study")
    record_entries(out, "study", ["base"])
    (out / "base").mkdir()
    with pytest.raises(OutputDirError):
        claim_output_dir(out, "tsm-video demo")
    assert (out / "base").is_dir()


def test_recorded_names_cannot_escape_the_folder(tmp_path):
    out = claim_output_dir(tmp_path / "out", "cmd")
    (tmp_path / "outside").mkdir()
    marker = json.loads((out / MARKER).read_text())
    marker["entries"] = ["../outside", "/etc", "."]
    (out / MARKER).write_text(json.dumps(marker))
    (out / "kept").write_text("x")
    claim_output_dir(out, "cmd")
    assert (tmp_path / "outside").is_dir() and (out / "kept").is_file()


def test_cache_mode_keeps_contents(tmp_path):
    out = claim_output_dir(tmp_path / "cache", "study")
    record_entries(out, "study", ["base"])
    (out / "base").mkdir()
    claim_output_dir(out, "study", clean=False)
    assert (out / "base").is_dir()
