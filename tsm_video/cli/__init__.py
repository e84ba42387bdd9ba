"""`tsm-video` command line: the top of the import graph, one module per subcommand.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; its return value is the exit code). Subcommand
modules import only the standard library at module level, so ``--help`` stays fast; the work
is imported inside each handler.
"""

from __future__ import annotations

import argparse

from tsm_video.cli import data, demo, export, generate, train
from tsm_video.cli import eval as eval_cmd

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (data, train, demo, eval_cmd, generate, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsm-video",
        description="TimeStep Master post-pretraining for text-to-video diffusion models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
