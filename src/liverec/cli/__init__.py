"""The ``liverec`` command line: the engine (demo, import, train, serve, rebuild) and offline work (evaluate,
replay, simulate, ope, compare, generate, info, models).

Each command's module holds its parser (``add_parser``) beside its handler; :mod:`liverec.cli.common` holds
what they share. Errors people can fix (a bad file, a bad flag value) end the program with exit code 2 and one
line on stderr; nothing else is printed to stdout then, so ``--json`` output is always one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from liverec import __version__
from liverec.cli import (
    compare,
    data,
    demo,
    engine,
    evaluate,
    explain_check,
    keys,
    models,
    ope,
    openapi,
    privacy,
    replay,
    simulate,
)
from liverec.errors import LiveRecError

__all__ = ["build_parser", "main"]

# the order of the commands in ``liverec --help``
COMMAND_MODULES = (
    evaluate,
    explain_check,
    replay,
    simulate,
    ope,
    data,
    models,
    compare,
    demo,
    engine,
    keys,
    privacy,
    openapi,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``liverec`` parser: ``--version`` and one subcommand per command, each added by its module."""
    parser = argparse.ArgumentParser(prog="liverec", description="LiveRec: real-time personalised recommendations.")
    parser.add_argument("--version", action="version", version=f"liverec {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (LiveRecError, FileNotFoundError, ImportError) as error:
        print(f"liverec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 141
