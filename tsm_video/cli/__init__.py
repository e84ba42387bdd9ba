"""`tsm-video` command line: the top of the import graph, one module per subcommand.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; its return value is the exit code). Subcommand
modules import only the standard library at module level, so ``--help`` stays fast; the work
is imported inside each handler.

Errors follow one pattern, here and nowhere else: a project error
(:class:`tsm_video.errors.TSMVideoError`) or an ``OSError`` about a named path becomes one line
``tsm-video <command>: error: <message>`` on stderr and exit code 2, like argparse's own errors;
``--debug`` (anywhere on the line) re-raises it with its traceback. Any other exception is a bug
and keeps its traceback. ``KEY=VALUE`` config overrides may sit anywhere on the line.
"""

from __future__ import annotations

import argparse
import sys

from tsm_video.cli import data, demo, export, generate, train
from tsm_video.cli import eval as eval_cmd

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (data, train, demo, eval_cmd, generate, export)
_DEBUG_HELP = "show the full traceback of an error instead of one line"


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that run a command (``tsm-video train``, ``tsm-video eval compare``, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaves(p)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsm-video",
        description="TimeStep Master post-pretraining for text-to-video diffusion models.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    for leaf in _leaves(parser):
        # SUPPRESS: an absent leaf flag keeps the top-level value instead of resetting it.
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        leaf.set_defaults(_leaf=leaf)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``KEY=VALUE`` words argparse left over (overrides placed after an option)
    join ``args.overrides`` when the command takes overrides, anything else is an argparse error."""
    args, extras = parser.parse_known_args(argv)
    leaf: argparse.ArgumentParser = args._leaf
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    unknown = [w for w in extras if not (takes_overrides and "=" in w and not w.startswith("-"))]
    if unknown:
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extras:
        args.overrides = [*args.overrides, *extras]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``tsm-video`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from tsm_video.errors import user_message

    args = _parse(build_parser(), argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        message = user_message(err)
        if message is None or args.debug:
            raise
        print(f"{args._leaf.prog}: error: {message}", file=sys.stderr)
        return 2
