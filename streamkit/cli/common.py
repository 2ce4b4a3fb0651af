"""What the commands share: exit codes, ``--host``/``--dialect``, one-line error reports.

``--host builtin`` starts the emulator in-process for the length of the command.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

from ..errors import Cancelled, ConfigError, ConnectError

if TYPE_CHECKING:  # the client stack (requests) loads only for commands that use it
    from ..client import Client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

BUILTIN_HOST = "builtin"
BUILTIN_MODEL = "demo"  # the emulator's default model: -m may be left out with builtin
BUILTIN_TOKENS_PER_SECOND = 40.0  # paced, so the built-in demo looks like a real stream
BUILTIN_EMBED_MODEL = "demo-embed"  # the emulator's embedding model (batch --embed, bench --embed)
# What one embed request costs the built-in emulator: a fixed part per request and a part
# per input token, the shape of a small embedding model on a CPU, so grouping shows its gain.
BUILTIN_EMBED_REQUEST_S = 0.002
BUILTIN_EMBED_TOKEN_S = 20e-6
_START_OLLAMA_HINT = ("is Ollama running? Start it with `ollama serve` "
                      "(https://ollama.com/download), set --host or OLLAMA_HOST, "
                      "or try --host builtin")

T = TypeVar("T")


def argtype(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: its ConfigError becomes a usage error
    (exit 2) with the same message; argparse names the function in other errors."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def add_host_argument(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--dialect``, shared by every command that talks to a server."""
    parser.add_argument(
        "--host", default=None, metavar="URL",
        help="server URL (default: $OLLAMA_HOST or http://127.0.0.1:11434); "
             "'builtin' starts the emulator in-process")
    parser.add_argument("--dialect", choices=("ollama", "openai"), default="ollama",
                        help="wire dialect (default: ollama)")


@contextlib.contextmanager
def open_host(args: argparse.Namespace) -> Iterator[Optional[str]]:
    """The host URL to use; for ``--host builtin`` an emulator runs until the block ends."""
    if getattr(args, "host", None) != BUILTIN_HOST:
        yield getattr(args, "host", None)
        return
    from ..emulator import Emulator, EmulatorConfig
    with Emulator(EmulatorConfig(tokens_per_second=BUILTIN_TOKENS_PER_SECOND)) as emulator:
        yield emulator.url


@contextlib.contextmanager
def open_client(args: argparse.Namespace) -> Iterator[Client]:
    """A Client for ``args.host``/``args.dialect``, closed (with any emulator) afterwards."""
    from ..client import Client
    with open_host(args) as host, Client(host, dialect=args.dialect) as client:
        yield client


def print_error(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr and return the exit code it maps to."""
    if isinstance(exc, (KeyboardInterrupt, Cancelled)):
        print("streamkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ConnectError):
        # The transport's message may already say how to start Ollama.
        hint = "or try --host builtin" if "ollama serve" in message else _START_OLLAMA_HINT
        message = f"{message}; {hint}"
    print(f"streamkit: error: {message}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


def report_error(exc: BaseException, args: Any) -> int:
    """The exit code for an error that ended a command, after printing it.

    Error types in the command's ``usage_errors`` default are printed whole,
    after the command's name (a prompt file's list of bad lines); the rest
    as one line by :func:`print_error`.
    """
    if isinstance(exc, getattr(args, "usage_errors", ())):
        print(f"streamkit {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return print_error(exc)
