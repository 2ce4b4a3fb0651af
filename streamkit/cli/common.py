"""What the commands share: exit codes, ``--host``/``--dialect``/``--api-key``,
``-v`` logging, one-line error reports.

``--host builtin`` starts the emulator in-process for the length of the command.
Messages written for Python callers (``dialect="openai"``) are reworded for
the command line here, where they are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Tuple, TypeVar

from .._models import explain_missing, model_names
from ..config import Secret
from ..errors import Cancelled, ConfigError, ConnectError, ModelNotFound

if TYPE_CHECKING:  # the client stack (requests) loads only for commands that use it
    from ..client import Client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WRITE_FAILED = 3  # batch: the output could not be written (disk full); resumable
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

MAX_TOKENS_HELP = ("at most N output tokens (the num_predict option); llama.cpp with "
                   "--dialect openai needs it: without it chat runs to the full context "
                   "and completions stop after 16 tokens")
_KEY_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
_PYTHON_DIALECT = re.compile(r'dialect="(\w+)"')

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


HOST_HELP = ("server URL (default: $OLLAMA_HOST or http://127.0.0.1:11434; with --dialect "
             "openai $OPENAI_BASE_URL first); 'builtin' starts the emulator in-process")
API_KEY_HELP = ("sent as 'Authorization: Bearer KEY' (default: $OLLAMA_API_KEY, or "
                "$OPENAI_API_KEY with --dialect openai); never printed")


def add_host_argument(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--dialect``, ``--api-key`` and ``-v``, shared by every
    command that talks to a server."""
    parser.add_argument("--host", default=None, metavar="URL", help=HOST_HELP)
    parser.add_argument("--dialect", choices=("ollama", "openai"), default="ollama",
                        help="wire dialect (default: ollama)")
    parser.add_argument("--api-key", type=Secret, default=None, metavar="KEY",
                        help=API_KEY_HELP)
    add_verbose_argument(parser)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show retries, waits and the host chosen on stderr")


def max_tokens_option(text: str) -> Tuple[str, int]:
    """``--max-tokens N`` as the option pair it stands for, ``("num_predict", N)``."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--max-tokens must be >= 1, got {count}")
    return "num_predict", count


def add_max_tokens_argument(parser: Any, dest: str) -> None:
    """``--max-tokens N``: another spelling of ``--option num_predict=N``, appended
    to the same ``dest`` list."""
    parser.add_argument("--max-tokens", dest=dest, action="append", type=max_tokens_option,
                        metavar="N", help=MAX_TOKENS_HELP)


def check_output_path(path: Optional[str], flag: str = "-o") -> None:
    """Refuse an output path that looks like an option (``-o temperature=0``
    written for ``--option``), before anything is written there.

    Raises:
        ConfigError: with the hint to use ``-O``/``--option``.
    """
    if path is not None and _KEY_VALUE.match(path) and "/" not in path:
        raise ConfigError(
            f"{flag} {path!r} looks like a model option, not a file: {flag} is the output "
            f"path; give options with -O/--option {path}")


@contextlib.contextmanager
def verbose_logging(args: argparse.Namespace) -> Iterator[None]:
    """With ``-v``, the ``streamkit`` logger's INFO records (retries, waits, the host)
    go to stderr for the length of the command; the library itself never
    configures logging."""
    if not getattr(args, "verbose", False):
        yield
        return
    logger = logging.getLogger("streamkit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("streamkit: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


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
    """A Client for ``args.host``/``args.dialect``/``args.api_key``, closed (with any
    emulator) afterwards. A ModelNotFound from the block is re-raised naming
    the models the server has."""
    from ..client import Client
    builtin = getattr(args, "host", None) == BUILTIN_HOST
    with open_host(args) as host, Client(host, dialect=args.dialect,
                                         api_key=getattr(args, "api_key", None)) as client:
        logging.getLogger("streamkit").info(
            "host: %s (%s dialect%s)", client.host, client.dialect,
            ", the built-in emulator" if builtin else "")
        try:
            yield client
        except ModelNotFound as exc:
            raise explain_missing(exc, model_names(client), builtin) from None


def cli_wording(message: str) -> str:
    """A library message as the command line says it (``--dialect openai``)."""
    return _PYTHON_DIALECT.sub(r"--dialect \1", message)


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
    print(f"streamkit: error: {cli_wording(message)}", file=sys.stderr)
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
