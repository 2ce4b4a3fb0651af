"""``streamkit batch``: the arguments (built from BatchConfig), ``builtin`` hosts,
signal handling, and the resume command; the work itself is in streamkit/batch/."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from dataclasses import fields, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..batch import BatchConfig, BatchSummary, PromptFileError
from ..batch.config import Flag, command_words, config_values, flag_of
from ..config import HostSpec
from ..errors import ConfigError, ModelNotFound
from .common import (
    BUILTIN_EMBED_MODEL,
    BUILTIN_EMBED_REQUEST_S,
    BUILTIN_EMBED_TOKEN_S,
    BUILTIN_HOST,
    BUILTIN_MODEL,
    BUILTIN_TOKENS_PER_SECOND,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE_FAILED,
    add_max_tokens_argument,
    add_verbose_argument,
    argtype,
    check_output_path,
)

NO_MODEL = "no model: pass -m MODEL or give each line a model"

BUILTIN_SLOTS = 4  # the emulator's default parallel slots
# A second SIGINT/SIGTERM this soon after the first is the same stop: `timeout
# -s INT` or a terminal can deliver one signal twice (to the process and its group).
REPEAT_SIGNAL_WINDOW_S = 1.0


def _add_flag(parser: argparse.ArgumentParser, name: str, flag: Flag) -> None:
    """One BatchConfig field as an argparse argument (default None: "not given")."""
    kwargs: Dict[str, Any] = {"help": flag.help}
    if flag.metavar is not None:
        kwargs["metavar"] = flag.metavar
    if flag.choices is not None:
        kwargs["choices"] = flag.choices
    if not flag.names:
        parser.add_argument(name, **kwargs)
        return
    kwargs.update(dest=name, default=None)
    if flag.switch:
        kwargs.update(action="store_const", const=flag.const)
    else:
        if flag.parse is not None:
            kwargs["type"] = argtype(flag.parse)
        if flag.repeat:
            kwargs["action"] = "append"
        if flag.const is not None:
            kwargs.update(nargs="?", const=flag.const)
    parser.add_argument(*flag.names, **kwargs)


def _help_order() -> List[Tuple[str, Optional[Flag]]]:
    """(field name, Flag) in the order the help lists them: BatchConfig's field
    order, but -m before -o, and the command's own --check (None) after --ordered,
    where they have always been."""
    order = [(f.name, flag_of(f)) for f in fields(BatchConfig) if flag_of(f) is not None]
    output = order.pop([name for name, _ in order].index("output"))
    order.insert([name for name, _ in order].index("model") + 1, output)
    order.insert([name for name, _ in order].index("ordered") + 1, ("check", None))
    return order


def register(sub: Any) -> None:
    p = sub.add_parser(
        "batch", help="run a prompt file (.jsonl/.txt/.csv) into a results file, resumably",
        description="Send every prompt of PROMPTS through a pool of workers and append one "
                    "JSON line per answer to OUT (failures go to OUT.errors.jsonl). Rerunning "
                    "the same command resumes: ids already in OUT are skipped, failed ones "
                    "retried. Exit codes: 0 all ok, 1 some failed, 2 bad input (a model no "
                    "host has, or OUT in use by another run), 3 OUT could not be written "
                    "(disk full), 130 interrupted.")
    for name, flag in _help_order():
        if flag is None:
            p.add_argument("--check", action="store_true",
                           help="validate PROMPTS (and count what OUT already has), send nothing")
        else:
            _add_flag(p, name, flag)
            if name == "options":
                add_max_tokens_argument(p, "options")
    add_verbose_argument(p)
    # Bad prompt-file lines are listed whole: "streamkit batch: <problems>".
    p.set_defaults(func=_batch, usage_errors=(PromptFileError,))


def _batch(args: argparse.Namespace) -> int:
    check_output_path(args.output)
    try:
        if args.check:
            return _check(args)
        return _run_command(args)
    except PromptFileError as exc:
        if args.model is None and all(p.message.startswith("no model") for p in exc.problems):
            raise ConfigError(NO_MODEL) from None  # one line, not one per prompt
        raise


def _run_command(args: argparse.Namespace) -> int:
    if args.output is None:
        raise ConfigError("give the results file with -o OUT.jsonl")
    values = config_values(vars(args))
    workers = _host_workers(values.get("hosts"))
    if workers is not None:
        values.setdefault("workers", workers)
    asked = BatchConfig(**values)  # as typed: the resume command repeats it
    from ..batch.output import OutputWriteError
    with _builtin_hosts(asked) as config:
        logging.getLogger("streamkit").info(
            "hosts: %s", ", ".join(str(h) for h in config.hosts or ["$OLLAMA_HOST/default"]))
        try:
            summary = _run(config, builtin=_uses_builtin(asked.hosts))
        except ModelNotFound as exc:  # checked before the first request: fix and rerun
            raise ConfigError(str(exc)) from None
        except OutputWriteError as exc:
            print(f"streamkit batch: error: {exc}; every answer written so far is kept",
                  file=sys.stderr)
            print(f"free some space, then resume with: {resume_command(asked)}",
                  file=sys.stderr)
            return EXIT_WRITE_FAILED
        if summary.total == 0 and summary.invalid == 0:
            print(f"warning: {asked.inputs} has no prompts: nothing to do", file=sys.stderr)
            return EXIT_OK
        print(summary.line(), file=sys.stderr)
        if summary.interrupted:
            note = "  (feed the same input on stdin)" if asked.inputs == "-" else ""
            print(f"resume with: {resume_command(asked)}{note}", file=sys.stderr)
        return summary.exit_code


def resume_command(config: BatchConfig) -> str:
    """The command that continues a run of ``config`` as typed (minus --no-resume):
    its options that differ from what the command line would pick by itself."""
    workers = _host_workers(config.hosts)
    defaults = {} if workers is None else {"workers": workers}
    words = ["streamkit", "batch", *command_words(config, **defaults)]
    return " ".join(shlex.quote(word) for word in words)


def _check(args: argparse.Namespace) -> int:
    from ..batch import check_prompts

    output = args.output
    if output is not None and args.output_format not in (None, "jsonl"):
        from ..batch.embed import journal_path  # a matrix output: its journal says what is done
        output = journal_path(BatchConfig(args.inputs, output, output_format=args.output_format))
    builtin = BUILTIN_EMBED_MODEL if args.embed else BUILTIN_MODEL
    model = args.model or (builtin if _uses_builtin(args.hosts) else None)
    report = check_prompts(args.inputs, output, model=model, input_format=args.input_format,
                           prompt_column=args.prompt_column or "prompt",
                           id_column=args.id_column or "id")
    if args.model is None and report.problems and all(
            p.message.startswith("no model") for p in report.problems):
        print(f"streamkit batch: {NO_MODEL}", file=sys.stderr)
        return EXIT_USAGE
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.problem_count > len(report.problems):
        print(f"... and {report.problem_count - len(report.problems)} more", file=sys.stderr)
    todo = report.prompts - report.done
    print(f"{report.prompts} valid prompt(s), {report.problem_count} bad line(s), "
          f"{report.done} already in {output or 'the output'}, {todo} to run")
    return EXIT_OK if report.ok else EXIT_USAGE


def _is_builtin(host: HostSpec) -> bool:
    return (host if isinstance(host, str) else host[0]) == BUILTIN_HOST


def _uses_builtin(hosts: Optional[Sequence[HostSpec]]) -> bool:
    return any(_is_builtin(h) for h in hosts or ())


def _builtin_slots(hosts: Sequence[HostSpec]) -> int:
    """The emulator's slots: the first ``builtin=N``'s N, else its default."""
    given = next(h for h in hosts if _is_builtin(h))
    return given[1] if isinstance(given, tuple) else BUILTIN_SLOTS


def _host_workers(hosts: Optional[Sequence[HostSpec]]) -> Optional[int]:
    """``--workers`` by default: the sum of the hosts' slots when every host has
    some (``builtin`` has the emulator's); None: BatchConfig's own default."""
    if not hosts:
        return None
    slots = [_builtin_slots(hosts) if _is_builtin(h) else h[1] if isinstance(h, tuple)
             else None for h in hosts]
    return None if None in slots else sum(n for n in slots if n is not None)


@contextlib.contextmanager
def _builtin_hosts(config: BatchConfig) -> Iterator[BatchConfig]:
    """``config`` with ``builtin`` hosts served by an emulator until the block ends."""
    if not _uses_builtin(config.hosts):
        yield config
        return
    from ..emulator import Emulator, EmulatorConfig
    assert config.hosts is not None
    slots = _builtin_slots(config.hosts)
    emulated = EmulatorConfig(tokens_per_second=BUILTIN_TOKENS_PER_SECOND, parallel=slots,
                              embed_request_cost=BUILTIN_EMBED_REQUEST_S,
                              embed_token_cost=BUILTIN_EMBED_TOKEN_S)
    model = config.model or (BUILTIN_EMBED_MODEL if config.embed else BUILTIN_MODEL)
    with Emulator(emulated) as emulator:
        hosts = [(emulator.url, slots) if _is_builtin(h) else h for h in config.hosts]
        yield replace(config, hosts=hosts, model=model)


def _run(config: BatchConfig, *, builtin: bool) -> BatchSummary:
    """Run ``config``; the first Ctrl-C or SIGTERM stops it cleanly. ``builtin``:
    its hosts are the built-in emulator (a missing model's message says so)."""
    import threading

    from ..batch import run_batch

    stop = threading.Event()
    restore = _install_stop_handlers(stop)
    try:
        summary = run_batch(config.inputs, config.output, config=config, stop=stop,
                            report=lambda message: print(message, file=sys.stderr),
                            executor=_executor(config), builtin=builtin)
    finally:
        restore()
    return summary


def _install_stop_handlers(stop: Any) -> Callable[[], None]:
    """First SIGINT/SIGTERM sets ``stop`` (a clean stop); another one more than
    REPEAT_SIGNAL_WINDOW_S later exits at once (one within it is the same stop).

    Exiting at once is safe for the files: every record is a single write.
    Returns a function restoring the previous handlers.
    """
    import os
    import signal
    import time

    first: List[float] = []

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if first and now - first[0] < REPEAT_SIGNAL_WINDOW_S:
            return
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        first.append(now)
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


def _executor(config: BatchConfig) -> Any:
    """The Ray executor with ``--ray``; None runs on a Dispatcher."""
    if config.ray_address is None:
        return None
    from ..ray import batch_executor
    return batch_executor
