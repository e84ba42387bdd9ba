"""`tsm-video` command line: one subcommand per feature, each defined in its own module.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def _subcommand_modules() -> list:
    """Modules that register subcommands, imported here so `--help` lists them all."""
    modules = []
    modules.append(__import__("tsm_video.data.cli", fromlist=["register"]))  # tsm-video data
    modules.append(__import__("tsm_video.train.cli", fromlist=["register"]))  # tsm-video train, demo
    modules.append(__import__("eval_crafter.cli", fromlist=["register"]))  # tsm-video eval
    modules.append(__import__("tsm_video.generation.cli", fromlist=["register"]))  # tsm-video generate
    modules.append(__import__("tsm_video.export", fromlist=["register"]))  # tsm-video export
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsm-video",
        description="TimeStep Master post-pretraining for text-to-video diffusion models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
