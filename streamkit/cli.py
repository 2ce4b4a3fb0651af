"""The ``streamkit`` command: an argparse front end with no business logic.

Only this module parses argv, configures logging or exits the process.
Exit codes: 0 ok, 1 some prompts failed, 2 usage/config error, 130 interrupted.

Each subcommand has an ``_add_<name>(subparsers)`` that defines its
arguments and a ``_cmd_<name>(args) -> int`` that runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    TextIO,
    Tuple,
)

from ._version import __version__
from .errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ServerBusy,
    StreamError,
    StreamkitError,
    StreamTimeout,
)

if TYPE_CHECKING:  # the client stack (requests) loads only for commands that use it
    from .client import Client, Conversation
    from .stream import Stream

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]

# Each section below defines ``_add_<name>(sub)``, which adds its subparser and
# sets ``func=_cmd_<name>`` as a default, then appends itself to _COMMANDS.
_COMMANDS: List[Callable[[Any], None]] = []


# --- emulate ------------------------------------------------------------------


def _add_emulate(sub: Any) -> None:
    p = sub.add_parser(
        "emulate", help="run the Ollama-compatible emulator until Ctrl-C",
        description="Serve Ollama's API (and /v1) with deterministic text, pacing "
                    "and fault injection. Fault syntax: see `pydoc streamkit.emulator`.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11434, help="port (0 = any free port)")
    p.add_argument("--tokens-per-second", type=float, default=50.0,
                   help="pacing per stream (0 = unpaced, as fast as possible)")
    p.add_argument("--first-token-delay", type=float, default=0.0, metavar="S")
    p.add_argument("--load-time", type=float, default=0.0, metavar="S",
                   help="model load time on first use")
    p.add_argument("--parallel", type=int, default=4, help="generation slots per model")
    p.add_argument("--max-queue", type=int, default=512,
                   help="requests that may wait for a slot before 503")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="a model to serve (repeatable; default demo)")
    p.add_argument("--fault", action="append", dest="faults", metavar="SPEC", default=[],
                   help="fault spec, e.g. 'status:503,first=2' or 'cut,after=5,p=0.1' "
                        "(repeatable)")
    p.add_argument("--stamp", action="store_true",
                   help="add _sent_ns (perf_counter_ns) to each chunk")
    p.add_argument("--tokens-per-chunk", type=int, default=1, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_emulate)


def _cmd_emulate(args: argparse.Namespace) -> int:
    import threading

    from .emulator import Emulator, EmulatorConfig, parse_faults
    from .errors import ConfigError as _ConfigError

    try:
        config = EmulatorConfig(
            host=args.host, port=args.port, models=tuple(args.models or ("demo",)),
            tokens_per_second=args.tokens_per_second, first_token_delay=args.first_token_delay,
            load_time=args.load_time, parallel=args.parallel, max_queue=args.max_queue,
            faults=parse_faults(";".join(args.faults)), stamp=args.stamp,
            tokens_per_chunk=args.tokens_per_chunk, seed=args.seed)
        emulator = Emulator(config).start()
    except _ConfigError as exc:
        print(f"streamkit emulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(emulator.url, flush=True)
        forever = threading.Event()
        while not forever.wait(3600):  # wakes only for Ctrl-C (KeyboardInterrupt)
            pass
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        emulator.stop()
    return EXIT_OK  # pragma: no cover - the loop above only ends by Ctrl-C


_COMMANDS.append(_add_emulate)


# --- chat / generate / check / pull ------------------------------------------
#
# Shared helpers for every command that talks to a server: ``--host`` (with
# ``builtin`` starting the emulator in-process), one-line error reports, and
# the exit code each error maps to.

BUILTIN_HOST = "builtin"
BUILTIN_TOKENS_PER_SECOND = 40.0  # paced, so the built-in demo looks like a real stream
_START_OLLAMA_HINT = ("is Ollama running? Start it with `ollama serve` "
                      "(https://ollama.com/download), set --host or OLLAMA_HOST, "
                      "or try --host builtin")


def _add_host_argument(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--dialect``, shared by every command that talks to a server."""
    parser.add_argument(
        "--host", default=None, metavar="URL",
        help="server URL (default: $OLLAMA_HOST or http://127.0.0.1:11434); "
             "'builtin' starts the emulator in-process")
    parser.add_argument("--dialect", choices=("ollama", "openai"), default="ollama",
                        help="wire dialect (default: ollama)")


@contextlib.contextmanager
def _open_host(args: argparse.Namespace) -> Iterator[Optional[str]]:
    """The host URL to use; for ``--host builtin`` an emulator runs until the block ends."""
    if getattr(args, "host", None) != BUILTIN_HOST:
        yield getattr(args, "host", None)
        return
    from .emulator import Emulator, EmulatorConfig
    with Emulator(EmulatorConfig(tokens_per_second=BUILTIN_TOKENS_PER_SECOND)) as emulator:
        yield emulator.url


@contextlib.contextmanager
def _open_client(args: argparse.Namespace) -> Iterator[Client]:
    """A Client for ``args.host``/``args.dialect``, closed (with any emulator) afterwards."""
    from .client import Client
    with _open_host(args) as host, Client(host, dialect=args.dialect) as client:
        yield client


def _print_error(exc: BaseException) -> int:
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


def _parse_option(text: str) -> Tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, booleans, lists: "stop=[\"\\n\"]"
    except ValueError:
        return key, value


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model name, e.g. llama3.2")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("-o", "--option", action="append", type=_parse_option, default=[],
                        metavar="KEY=VALUE",
                        help="an Ollama option, e.g. -o temperature=0 -o num_predict=64")
    _add_host_argument(parser)


def _options(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    return dict(args.option) if args.option else None


def _print_stream(stream: Stream, out: TextIO) -> None:
    """Write the stream's text to ``out`` as it arrives, then a newline.

    Raises the stream's error; KeyboardInterrupt cancels the stream first.
    """
    wrote = False
    with stream:
        try:
            for chunk in stream:
                if chunk.text:
                    out.write(chunk.text)
                    out.flush()
                    wrote = True
        except BaseException:
            stream.cancel()  # Ctrl-C: the server stops generating (a no-op if it ended)
            if wrote:  # end the partial answer's line; no stray blank line otherwise
                out.write("\n")
                out.flush()
            raise
    out.write("\n")
    out.flush()


def _chat_loop(conversation: Conversation, lines: Iterable[str], out: TextIO,
               err: TextIO, *, prompt: str = "") -> int:
    """The interactive chat: one answer per input line, keeping the history.

    Ctrl-C during an answer cancels that answer only; EOF or ``/bye`` ends
    the loop (exit 0). Ctrl-C while waiting for input propagates.
    """
    iterator = iter(lines)
    while True:
        if prompt:
            err.write(prompt)
            err.flush()
        line = next(iterator, None)
        if line is None or line.strip() in ("/bye", "/exit"):
            return EXIT_OK
        if not line.strip():
            continue
        try:
            _print_stream(conversation.ask(line.rstrip("\n")), out)
        except KeyboardInterrupt:
            err.write("[answer interrupted]\n")
            err.flush()
        except (StreamError, StreamTimeout, ServerBusy) as exc:
            _print_error(exc)  # this answer failed; the conversation goes on


def _add_chat(sub: Any) -> None:
    parser = sub.add_parser("chat", help="chat with a model (no PROMPT: interactive)",
                            description="Chat with a model. Without PROMPT, read one message "
                                        "a line from stdin, keeping the history.")
    parser.add_argument("prompt", nargs="?", default=None, help="the message (omit: interactive)")
    _add_generation_arguments(parser)
    parser.set_defaults(func=_cmd_chat)


def _cmd_chat(args: argparse.Namespace) -> int:
    try:
        from .client import Conversation
        with _open_client(args) as client:
            conversation = Conversation(client, args.model, system=args.system,
                                        options=_options(args))
            if args.prompt is not None:
                _print_stream(conversation.ask(args.prompt), sys.stdout)
                return EXIT_OK
            prompt = ">>> " if sys.stdin.isatty() else ""
            return _chat_loop(conversation, sys.stdin, sys.stdout, sys.stderr, prompt=prompt)
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)


_COMMANDS.append(_add_chat)


def _add_generate(sub: Any) -> None:
    parser = sub.add_parser("generate", help="complete one prompt (/api/generate)")
    parser.add_argument("prompt", help="the prompt")
    _add_generation_arguments(parser)
    parser.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        with _open_client(args) as client:
            stream = client.generate(args.model, args.prompt, system=args.system,
                                     options=_options(args))
            _print_stream(stream, sys.stdout)
            return EXIT_OK
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)


_COMMANDS.append(_add_generate)


def _add_check(sub: Any) -> None:
    parser = sub.add_parser("check", help="is the server reachable? version? models?")
    _add_host_argument(parser)
    parser.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        with _open_client(args) as client:
            print(f"host:    {client.host}")
            version = client.version()
            print(f"version: {version or 'unknown'}")
            names = [str(m.get("name") or m.get("id") or m.get("model")) for m in client.models()]
            print(f"models:  {', '.join(names) if names else '(none; try `ollama pull llama3.2`)'}")
            return EXIT_OK
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)


_COMMANDS.append(_add_check)


def _add_pull(sub: Any) -> None:
    parser = sub.add_parser("pull", help="download a model, with a progress bar")
    parser.add_argument("model", help="model name, e.g. llama3.2")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_host_argument(parser)
    parser.set_defaults(func=_cmd_pull)


def _cmd_pull(args: argparse.Namespace) -> int:
    show_bar = sys.stderr.isatty() and not args.quiet
    try:
        with _open_client(args) as client:
            last = _pull_with_progress(client.pull(args.model), show_bar)
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)
    print(f"{args.model}: {last.get('status', 'done')}")
    return EXIT_OK


def _pull_with_progress(records: Iterator[Dict[str, Any]], show_bar: bool) -> Dict[str, Any]:
    """Drain pull progress records (a tqdm bar per layer on stderr); return the last one."""
    last: Dict[str, Any] = {}
    bar: Any = None
    # Imported here: only a visible bar needs tqdm (and it has no type stubs).
    tqdm: Any = importlib.import_module("tqdm").tqdm if show_bar else None
    try:
        for record in records:
            last = record
            if not show_bar:
                continue
            if record.get("total"):
                if bar is None or bar.desc != record["status"]:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=record["total"], desc=record["status"], unit="B",
                               unit_scale=True, file=sys.stderr, leave=False)
                bar.update(record.get("completed", 0) - bar.n)
            else:
                tqdm.write(str(record.get("status", "")), file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        close = getattr(records, "close", None)
        if close is not None:
            close()
    return last


_COMMANDS.append(_add_pull)


# --- batch -------------------------------------------------------------------
#
# ``streamkit batch``: argument parsing and the signal handling around
# ``streamkit.batch.run_batch``; the work itself lives in streamkit/batch.py.

BATCH_DEFAULT_WORKERS = 8
BATCH_BUILTIN_SLOTS = 4  # the emulator's default parallel slots


def _parse_batch_host(text: str) -> Tuple[str, Optional[int]]:
    """``URL`` or ``URL=N`` (N parallel slots on that host)."""
    url, eq, count = text.rpartition("=")
    if eq and count.isdigit() and url:
        if int(count) < 1:
            raise argparse.ArgumentTypeError(f"host slots must be >= 1, got {text!r}")
        return url, int(count)
    return text, None


def _parse_think(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("low", "medium", "high"):
        return lowered
    raise argparse.ArgumentTypeError(f"--think takes true, false, low, medium or high, "
                                     f"got {text!r}")


def _add_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch", help="run a prompt file (.jsonl/.txt/.csv) into a results file, resumably",
        description="Send every prompt of PROMPTS through a pool of workers and append one "
                    "JSON line per answer to OUT (failures go to OUT.errors.jsonl). Rerunning "
                    "the same command resumes: ids already in OUT are skipped, failed ones "
                    "retried. Exit codes: 0 all ok, 1 some failed, 2 bad input, 130 "
                    "interrupted.")
    p.add_argument("prompts", metavar="PROMPTS", help="a .jsonl, .txt or .csv file, or - for stdin")
    p.add_argument("-m", "--model", default=None,
                   help="default model (a line's \"model\" overrides it)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.jsonl", help="results file")
    p.add_argument("--host", action="append", dest="hosts", default=[], metavar="URL[=N]",
                   type=_parse_batch_host,
                   help="a server (repeatable), with N parallel slots; 'builtin' starts the "
                        "emulator in-process (default: $OLLAMA_HOST)")
    p.add_argument("--dialect", choices=("ollama", "openai"), default="ollama")
    p.add_argument("-w", "--workers", type=int, default=None,
                   help="requests in flight (default: the sum of the hosts' N, else 8)")
    p.add_argument("--system", default=None, help="default system prompt")
    p.add_argument("--option", action="append", type=_parse_option, default=[],
                   metavar="KEY=VALUE", help="an Ollama option, e.g. --option temperature=0")
    p.add_argument("--format", default=None, help="'json' or a JSON schema")
    p.add_argument("--think", nargs="?", const=True, default=None, type=_parse_think,
                   metavar="LEVEL", help="ask thinking models to think (or low/medium/high)")
    p.add_argument("--ordered", action="store_true", help="write OUT in input order")
    p.add_argument("--check", action="store_true",
                   help="validate PROMPTS (and count what OUT already has), send nothing")
    p.add_argument("--skip-invalid", action="store_true",
                   help="run the good lines when some are bad (lists the bad ones)")
    p.add_argument("--cache", default=None, metavar="PATH",
                   help="SQLite response cache: identical requests are answered from it")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over: truncate OUT and its error file")
    p.add_argument("--input-format", choices=("jsonl", "txt", "csv"), default=None,
                   help="the format of PROMPTS (default: from its extension; stdin: jsonl)")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="retries per request before its first token (default 2)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="limit on each request's total time, in seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the requests on Ray actors (needs streamkit[ray]): 'auto' joins "
                        "the running cluster, no ADDRESS starts a local one; see docs/ray.md")
    p.add_argument("--ray-actors", type=int, default=2, metavar="N",
                   help="Ray actors sharing the hosts' slots (default 2)")
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import PromptFileError

    try:
        if args.check:
            return _batch_check(args)
        if args.output is None:
            raise ConfigError("give the results file with -o OUT.jsonl")
        with _batch_hosts(args) as hosts:
            return _batch_run(args, hosts)
    except PromptFileError as exc:
        print(f"streamkit batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)


def _batch_check(args: argparse.Namespace) -> int:
    from .batch import check_prompts

    model = args.model or ("demo" if _uses_builtin(args) else None)
    report = check_prompts(args.prompts, args.output, model=model,
                           input_format=args.input_format)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.problem_count > len(report.problems):
        print(f"... and {report.problem_count - len(report.problems)} more", file=sys.stderr)
    todo = report.prompts - report.done
    print(f"{report.prompts} valid prompt(s), {report.problem_count} bad line(s), "
          f"{report.done} already in {args.output or 'the output'}, {todo} to run")
    return EXIT_OK if report.ok else EXIT_USAGE


def _uses_builtin(args: argparse.Namespace) -> bool:
    return any(url == BUILTIN_HOST for url, _ in args.hosts)


@contextlib.contextmanager
def _batch_hosts(args: argparse.Namespace) -> Iterator[Optional[List[Any]]]:
    """The Dispatcher's hosts; ``builtin`` starts the emulator until the block ends."""
    if not args.hosts:
        yield None
        return
    if not _uses_builtin(args):
        yield [url if n is None else (url, n) for url, n in args.hosts]
        return
    from .emulator import Emulator, EmulatorConfig
    slots = next(n for url, n in args.hosts if url == BUILTIN_HOST) or BATCH_BUILTIN_SLOTS
    config = EmulatorConfig(tokens_per_second=BUILTIN_TOKENS_PER_SECOND, parallel=slots)
    with Emulator(config) as emulator:
        yield [(emulator.url, slots) if url == BUILTIN_HOST else url if n is None else (url, n)
               for url, n in args.hosts]


def _batch_workers(args: argparse.Namespace, hosts: Optional[List[Any]]) -> int:
    if args.workers is not None:
        return int(args.workers)
    if hosts and all(isinstance(h, tuple) for h in hosts):
        return sum(n for _, n in hosts)
    return BATCH_DEFAULT_WORKERS


def _batch_run(args: argparse.Namespace, hosts: Optional[List[Any]]) -> int:
    import threading

    from .batch import run_batch
    from .config import RetryPolicy, Timeouts

    stop = threading.Event()
    restore = _install_stop_handlers(stop)
    try:
        summary = run_batch(
            args.prompts, args.output, model=args.model or ("demo" if _uses_builtin(args)
                                                            else None),
            system=args.system, options=_options(args), format=_batch_format(args.format),
            think=args.think, hosts=hosts, workers=_batch_workers(args, hosts),
            ordered=args.ordered, resume=args.resume, skip_invalid=args.skip_invalid,
            cache=args.cache, progress=False if args.quiet else None,
            input_format=args.input_format, dialect=args.dialect,
            timeouts=Timeouts(total=args.timeout) if args.timeout else None,
            retry=RetryPolicy(attempts=args.retries + 1) if args.retries is not None else None,
            stop=stop, report=lambda message: print(message, file=sys.stderr),
            ray_address=args.ray, ray_actors=args.ray_actors)
    finally:
        restore()
    print(summary.line(), file=sys.stderr)
    if summary.interrupted:
        note = "  (feed the same input on stdin)" if args.prompts == "-" else ""
        print(f"resume with: {_resume_command(args)}{note}", file=sys.stderr)
    return summary.exit_code


def _batch_format(text: Optional[str]) -> Any:
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--format is not valid JSON: {exc}") from exc


def _install_stop_handlers(stop: Any) -> Callable[[], None]:
    """First SIGINT/SIGTERM sets ``stop`` (a clean stop); the second exits at once.

    Exiting at once is safe for the files: every record is a single write.
    Returns a function restoring the previous handlers.
    """
    import os
    import signal

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        # os.write, not print: a signal handler may run in the middle of a print.
        os.write(2, b"\nstopping: cancelling requests in flight "
                    b"(press Ctrl-C again to quit at once)\n")

    signals = [signal.SIGINT, signal.SIGTERM]
    try:
        previous = [(sig, signal.signal(sig, handler)) for sig in signals]
    except ValueError:  # not the main thread: no handlers; Ctrl-C raises as usual
        return lambda: None

    def restore() -> None:
        for sig, old in previous:
            signal.signal(sig, old)
    return restore


def _resume_command(args: argparse.Namespace) -> str:
    """The command that continues this run (the same one, minus --no-resume)."""
    import shlex

    parts = ["streamkit", "batch", args.prompts, "-o", args.output]
    if args.model:
        parts += ["-m", args.model]
    for url, n in args.hosts:
        parts += ["--host", url if n is None else f"{url}={n}"]
    if args.dialect != "ollama":
        parts += ["--dialect", args.dialect]
    if args.workers is not None:
        parts += ["--workers", str(args.workers)]
    if args.system is not None:
        parts += ["--system", args.system]
    for key, value in args.option:
        parts += ["--option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    for flag, value in (("--format", args.format), ("--cache", args.cache),
                        ("--input-format", args.input_format), ("--retries", args.retries),
                        ("--timeout", args.timeout)):
        if value is not None:
            parts += [flag, str(value)]
    if args.think is not None:
        parts += ["--think", str(args.think).lower()]
    if args.ray is not None:
        parts += [f"--ray={args.ray}", "--ray-actors", str(args.ray_actors)]
    for flag, on in (("--ordered", args.ordered), ("--skip-invalid", args.skip_invalid),
                     ("--quiet", args.quiet)):
        if on:
            parts.append(flag)
    return " ".join(shlex.quote(part) for part in parts)


_COMMANDS.append(_add_batch)




# --- bench -------------------------------------------------------------------


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 like 1,4,16, got {text!r}")
    return values


def _float_list(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 2 or 1,2,4, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected rates > 0, got {text!r}")
    return values


def _add_bench_load_arguments(p: argparse.ArgumentParser) -> None:
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_int_list, default=[1], metavar="N[,N...]",
                      help="closed loop: N streams at once, one point per value (default 1)")
    mode.add_argument("--rate", type=_float_list, default=None, metavar="R[,R...]",
                      help="open loop: R requests/s on a precomputed schedule, one point each")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant",
                      help="open-loop arrivals (default constant; poisson is seeded)")
    load.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                      help="open loop: at most N in flight; later ones wait in the client")
    load.add_argument("--requests", type=int, default=None, metavar="N",
                      help="requests per point (default max(10, 4 x concurrency), "
                           "or 10 s of arrivals)")
    load.add_argument("--duration", type=float, default=None, metavar="S",
                      help="stop starting requests after S seconds per point")
    load.add_argument("--warmup", type=int, default=0, metavar="K",
                      help="K requests at the same load first, left out of the statistics")
    load.add_argument("--processes", type=int, default=1, metavar="N",
                      help="shard the load over N processes (loads beyond one process)")
    load.add_argument("--seed", type=int, default=0, help="seed for prompts and schedules")


def _add_bench_request_arguments(p: argparse.ArgumentParser) -> None:
    req = p.add_argument_group("requests")
    req.add_argument("-m", "--model", default=None,
                     help="model name (default with --host builtin: demo)")
    req.add_argument("--prompt-file", default=None, metavar="FILE",
                     help="prompts in a batch format (.jsonl, .txt, .csv), used round-robin")
    req.add_argument("--prompt-words", type=int, default=32, metavar="N",
                     help="without --prompt-file: generated prompts of N words (default 32)")
    req.add_argument("--num-predict", "--max-tokens", dest="num_predict", type=int, default=64,
                     metavar="N", help="output tokens per request (default 64)")
    req.add_argument("--think", action="store_true", help="ask the model to think first")
    req.add_argument("-o", "--option", action="append", type=_parse_option, default=[],
                     metavar="KEY=VALUE", help="an Ollama option, e.g. -o temperature=0")
    _add_host_argument(req)  # type: ignore[arg-type]


def _add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure TTFT, TPOT, throughput; `bench compare A B` compares runs",
        description="Benchmark a server: closed-loop concurrency sweeps or open-loop rates, "
                    "with the client's own accuracy measured and printed.")
    _add_bench_load_arguments(p)
    _add_bench_request_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--slo", default=None, metavar="ttft=MS,tpot=MS,e2e=MS",
                     help="report goodput: requests meeting every given objective")
    out.add_argument("--out", default=None, metavar="DIR",
                     help="write run.json, requests.jsonl, summary.csv and charts here")
    out.add_argument("--no-plot", action="store_true", help="no PNG charts with --out")
    out.add_argument("--no-calibrate", action="store_true",
                     help="skip measuring the client's floor against the built-in emulator")
    out.add_argument("--no-load", action="store_true", help="do not preload the model")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    nested = p.add_subparsers(dest="bench_command", metavar="compare")
    cmp = nested.add_parser("compare", help="put the results of several runs side by side")
    cmp.add_argument("runs", nargs="+", metavar="RUN",
                     help="--out directories (or their run.json) of earlier runs")
    cmp.add_argument("--out", dest="compare_out", default=None, metavar="PNG",
                     help="also draw the runs' load charts overlaid into this PNG")
    p.set_defaults(func=_cmd_bench)


def _bench_config(args: argparse.Namespace) -> Any:
    from .bench import BenchConfig, Slo, read_prompt_file

    model = args.model or ("demo" if args.host == BUILTIN_HOST else None)
    if model is None:
        raise ConfigError("bench needs a model: -m MODEL (or --host builtin)")
    prompts = read_prompt_file(args.prompt_file, model) if args.prompt_file else ()
    return BenchConfig(
        model=model, host=args.host, dialect=args.dialect,
        concurrency=tuple(args.concurrency), rates=tuple(args.rate or ()),
        arrival=args.arrival, max_concurrency=args.max_concurrency, requests=args.requests,
        duration=args.duration, warmup=args.warmup, prompts=prompts,
        prompt_file=args.prompt_file, prompt_words=args.prompt_words,
        num_predict=args.num_predict, options=dict(args.option),
        think=True if args.think else None, slo=Slo.parse(args.slo) if args.slo else None,
        seed=args.seed, processes=args.processes, calibrate=not args.no_calibrate,
        load_model=not args.no_load)


def _bench_compare(args: argparse.Namespace) -> int:
    from .bench import format_compare, load_run

    runs = [(path.rstrip("/\\"), load_run(path)) for path in args.runs]
    print(format_compare(runs))
    if args.compare_out:
        from .bench import plot
        series = [(name, [p["summary"] for p in data["points"]]) for name, data in runs]
        print(f"chart: {plot.render_compare(series, args.compare_out)}")
    return EXIT_OK


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import format_point, run_bench, write_outputs

    config = _bench_config(args)
    note = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    run = run_bench(config, on_status=note,
                    on_point=lambda point: print(format_point(point) + "\n", flush=True))
    if run.model_load:
        server = run.model_load.get("server_load_ms")
        print(f"model load: {run.model_load['wall_ms']:.0f} ms wall"
              + (f", server load_duration {server:.0f} ms" if server is not None else ""))
    if args.out:
        from .bench import plot
        if not args.no_plot and not plot.available():
            print(f"note: {plot.MISSING}", file=sys.stderr)
        for path in write_outputs(run, args.out, plots=not args.no_plot):
            print(f"wrote {path}")
    return EXIT_FAILED if any(p.summary.ok == 0 for p in run.points) else EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark, or compare earlier ones. Exit 1 when a point had no
    successful request, 2 on bad arguments, 130 on Ctrl-C."""
    try:
        if args.bench_command == "compare":
            return _bench_compare(args)
        return _bench_run(args)
    except (StreamkitError, KeyboardInterrupt) as exc:
        return _print_error(exc)


_COMMANDS.append(_add_bench)


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
