"""The ``streamkit`` command: an argparse front end with no business logic.

Only this package parses argv, configures logging or exits the process.
Exit codes: 0 ok, 1 some prompts failed, 2 usage/config error, 3 batch output could not be
written (disk full; resumable), 130 interrupted.

One module per command family (:mod:`.chat`, :mod:`.server`, :mod:`.batch`,
:mod:`.bench`, :mod:`.emulate`), each with a ``register(subparsers)`` that
adds its subcommands and sets ``func``: a function of the parsed arguments
returning the exit code. Errors are mapped to exit codes once, in
:func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from .._version import __version__
from ..errors import StreamkitError
from . import batch, bench, chat, emulate, server
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    report_error,
    verbose_logging,
)

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

_FAMILIES = (emulate, chat, server, batch, bench)  # the order of `streamkit --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamkit",
        description="Stream LLM output from Ollama and OpenAI-compatible servers.")
    parser.add_argument("--version", action="version", version=f"streamkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in _FAMILIES:
        family.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); return its exit code.

    argparse exits (SystemExit 2) on a usage error it finds itself; every
    other error ends here: printed on stderr and mapped to its exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Optional[Command] = getattr(args, "func", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with verbose_logging(args):
            return command(args)
    except (StreamkitError, KeyboardInterrupt) as exc:
        return report_error(exc, args)
