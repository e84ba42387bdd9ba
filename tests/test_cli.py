"""The `tsm-video` command line: every subcommand is wired and answers `--help`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tsm_video.cli import build_parser


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_top_level_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "tsm_video.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_missing_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == 2


def test_every_flag_and_argument_has_help():
    from tsm_video.cli import _leaves

    missing = [
        f"{leaf.prog} {action.option_strings or action.dest}"
        for leaf in _leaves(build_parser())
        for action in leaf._actions
        if not action.help and not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]
    assert not missing, missing
