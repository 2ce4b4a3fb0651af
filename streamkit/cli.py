"""The ``streamkit`` command: an argparse front end with no business logic.

Only this module parses argv, configures logging or exits the process.
Exit codes: 0 ok, 1 some prompts failed, 2 usage/config error, 130 interrupted.

Each subcommand has an ``_add_<name>(subparsers)`` that defines its
arguments and a ``_cmd_<name>(args) -> int`` that runs it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, List, Optional

from ._version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]

# Each section below defines ``_add_<name>(sub)``, which adds its subparser and
# sets ``func=_cmd_<name>`` as a default, then appends itself to _COMMANDS.
_COMMANDS: List[Callable[[Any], None]] = []


# --- emulate ------------------------------------------------------------------


# --- chat / generate / check / pull ------------------------------------------


# --- batch -------------------------------------------------------------------


# --- bench -------------------------------------------------------------------



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamkit",
        description="Stream LLM output from Ollama and OpenAI-compatible servers.")
    parser.add_argument("--version", action="version", version=f"streamkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Optional[Command] = getattr(args, "func", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return command(args)
