"""Batch runs of prompt files: validated, resumable, exactly once.

``run_batch(inputs, output, ...)`` reads a prompt file (see
:mod:`streamkit._batchinput` for the formats), validates every line before
the first request, sends the prompts through a :class:`~streamkit.Dispatcher`
and appends one JSON line per answer to ``output``. Failures go to
``OUTPUT.errors.jsonl`` (``results.jsonl`` → ``results.errors.jsonl``).

Resume is the default: ids already in ``output`` are skipped, a torn last
line left by a crash is cut off first, and an id is never written twice.
Failed ids have no line in ``output``, so the next run retries them. See
:mod:`streamkit._batchoutput` for the file rules.

Stopping: set the ``stop`` Event (the CLI does so on the first Ctrl-C or
SIGTERM) and the run stops reading input, cancels the streams in flight (the
server stops generating), writes what has completed, and returns a summary
with ``interrupted=True``. A KeyboardInterrupt raised inside ``run_batch``
does the same cleanup, then propagates.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from ._batchinput import (
    InputFile,
    Problem,
    PromptLine,
    Scan,
    detect_format,
    read_prompts,
    scan_prompts,
)
from ._batchoutput import (
    ErrorLog,
    RecordWriter,
    Syncer,
    error_record,
    errors_path,
    repair,
    result_record,
    scan_output,
)
from .config import RetryPolicy, Timeouts
from .errors import Cancelled, ConfigError
from .records import ChatRequest, GenerateRequest, Request, ResponseCache, Result

__all__ = ["BatchConfig", "BatchSummary", "CheckReport", "PromptFileError", "check_prompts",
           "run_batch"]

MAX_PROBLEMS = 20
STOP_POLL_S = 0.05          # how fast the stop watcher sees ``stop`` being set
PROGRESS_REFRESH_S = 0.25   # postfix updates (failed, in flight, tok/s) at most this often

HostSpec = Union[str, Tuple[str, int]]
Report = Callable[[str], None]


class PromptFileError(ConfigError):
    """The prompt file has bad lines. ``problems`` lists the first ones, ``total`` counts all."""

    def __init__(self, problems: Sequence[Problem], total: int) -> None:
        lines = [str(p) for p in problems]
        if total > len(problems):
            lines.append(f"... and {total - len(problems)} more")
        lines.append(f"{total} bad line(s): fix them, or pass --skip-invalid to run the rest")
        super().__init__("\n".join(lines))
        self.problems = list(problems)
        self.total = total


@dataclass(frozen=True)
class BatchConfig:
    """Everything a batch run needs; validated on construction (ConfigError)."""

    inputs: str
    output: str
    model: Optional[str] = None
    system: Optional[str] = None
    options: Optional[Mapping[str, Any]] = None
    format: Optional[Union[str, Mapping[str, Any]]] = None
    think: Optional[Union[bool, str]] = None
    hosts: Optional[Sequence[HostSpec]] = None
    workers: int = 8
    ordered: bool = False
    resume: bool = True
    skip_invalid: bool = False
    input_format: Optional[str] = None
    dialect: str = "ollama"
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_problems: int = MAX_PROBLEMS
    ray_address: Optional[str] = None   # run on Ray actors (streamkit.ray); "local" starts one
    ray_actors: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.output, str) or not self.output or self.output == "-":
            raise ConfigError("the output must be a file path (-o OUT.jsonl)")
        if self.inputs != "-" and os.path.abspath(self.inputs) == os.path.abspath(self.output):
            raise ConfigError("the output file must not be the prompt file")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise ConfigError(f"workers must be an int >= 1, got {self.workers!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise ConfigError("options must be a dict of Ollama option names")
        detect_format(self.inputs, self.input_format)  # raises for an unknown format

    @property
    def errors(self) -> str:
        return errors_path(self.output)

    @property
    def format_name(self) -> str:
        return detect_format(self.inputs, self.input_format)


@dataclass(frozen=True)
class BatchSummary:
    """What a run did. ``exit_code``: 0 all ok, 1 some failed or invalid, 130 interrupted."""

    output: str
    errors: str
    total: int = 0          # valid prompts in the file
    skipped: int = 0        # already in the output (resume)
    ok: int = 0
    cached: int = 0         # of ok: served from the cache
    failed: int = 0
    invalid: int = 0        # bad lines skipped (--skip-invalid)
    not_run: int = 0        # left for the next run (interrupted)
    interrupted: bool = False
    repaired_bytes: int = 0  # a torn last line cut off the output
    output_tokens: int = 0
    elapsed_s: float = 0.0
    problems: Tuple[Problem, ...] = ()

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.invalid else 0

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        parts = [f"{self.ok} ok" + (f" ({self.cached} cached)" if self.cached else "")]
        parts.append(f"{self.failed} failed" + (f" (see {self.errors})" if self.failed else ""))
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.invalid:
            parts.append(f"{self.invalid} invalid line(s) skipped")
        if self.not_run:
            parts.append(f"{self.not_run} not run")
        rate = self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0
        head = "interrupted" if self.interrupted else "done"
        return (f"{head}: {', '.join(parts)}; {self.output_tokens} tokens in "
                f"{self.elapsed_s:.1f} s ({rate:.0f} tok/s) → {self.output}")


# --- requests ------------------------------------------------------------------


def build_request(line: PromptLine, config: BatchConfig) -> Request:
    """The request for one line: the line's fields over the run's defaults."""
    model = line.model or config.model
    assert model is not None  # validation rejected lines without any model
    options = {**(config.options or {}), **(line.options or {})} or None
    system = line.system if line.system is not None else config.system
    fmt = line.format if line.format is not None else config.format
    think = line.think if line.think is not None else config.think
    if line.messages is not None:
        messages = list(line.messages)
        if system is not None and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": system})
        return ChatRequest(model, messages, options=options, format=fmt, think=think,
                           id=line.id)
    assert line.prompt is not None
    return GenerateRequest(model, line.prompt, system=system, options=options, format=fmt,
                           think=think, id=line.id)


# --- validation ----------------------------------------------------------------


def _scan(path: str, config: BatchConfig, display: str) -> Scan:
    return scan_prompts(path, config.format_name, default_model=config.model,
                        display=display, max_problems=config.max_problems)


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check_prompts`."""

    prompts: int            # valid prompts
    done: int               # of them, already in the output
    problems: Tuple[Problem, ...]
    problem_count: int

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


def check_prompts(inputs: str, output: Optional[str] = None, *, model: Optional[str] = None,
                  input_format: Optional[str] = None, max_problems: int = MAX_PROBLEMS,
                  stdin: Optional[IO[bytes]] = None) -> CheckReport:
    """Validate a prompt file without sending anything (``streamkit batch --check``).

    Streams through the file once (stdin included), keeping only the ids.
    With ``output``, also counts the prompts an existing output already holds.

    Raises:
        ConfigError: the file cannot be read, an unknown format, a corrupt output.
    """
    config = BatchConfig(inputs, output or "unused.jsonl", model=model,
                         input_format=input_format, max_problems=max_problems)
    with InputFile(inputs, stdin) as (path, display):
        scan = _scan(path, config, display)
    done = 0
    if output is not None:
        finished = scan_output(output).done
        done = sum(1 for i in scan.ids.ids if i in finished)
    return CheckReport(scan.prompts, done, tuple(scan.problems), scan.problem_count)


# --- the run -------------------------------------------------------------------


def run_batch(inputs: str, output: str, *, model: Optional[str] = None,
              system: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
              format: Optional[Union[str, Mapping[str, Any]]] = None,
              think: Optional[Union[bool, str]] = None,
              hosts: Optional[Sequence[HostSpec]] = None, workers: int = 8,
              ordered: bool = False, resume: bool = True, skip_invalid: bool = False,
              cache: Union[ResponseCache, str, None] = None, progress: Optional[bool] = None,
              input_format: Optional[str] = None, dialect: str = "ollama",
              timeouts: Optional[Timeouts] = None,
              retry: Optional[RetryPolicy] = None, stop: Optional[threading.Event] = None,
              report: Optional[Report] = None, stdin: Optional[IO[bytes]] = None,
              client: Any = None, ray_address: Optional[str] = None,
              ray_actors: int = 2) -> BatchSummary:
    """Run every prompt of ``inputs`` not yet in ``output``; append the answers.

    Args:
        inputs: a ``.jsonl``, ``.txt`` or ``.csv`` file, or ``"-"`` for stdin
            (spooled to a temporary file: it is read twice).
        output: the results file (JSONL); failures go to ``errors_path(output)``.
        model, system, options, format, think: defaults for lines that do
            not set them (a line's ``options`` are merged over ``options``).
        hosts: servers, as URLs or ``(url, parallel)`` pairs (Dispatcher
            routing); None: ``$OLLAMA_HOST`` or the default.
        workers: requests in flight at once.
        ordered: write the output in input order (a bounded reordering
            buffer holds early results); otherwise in completion order.
        resume: skip ids already in ``output`` (default). False starts over:
            the output and error files are truncated.
        skip_invalid: run the good lines when some are bad (the bad ones are
            passed to ``report`` and counted in the summary).
        cache: a :class:`~streamkit.cache.SQLiteCache`, any ResponseCache, or
            a path to open one; hits are written with ``"cached": true``.
        progress: a tqdm bar on stderr; None: only when stderr is a TTY.
        dialect: ``"ollama"`` or ``"openai"`` (Client setting).
        timeouts, retry: per request (Client settings).
        stop: set it (from any thread or a signal handler) to stop the run.
        report: called with each message worth showing (skipped bad lines,
            the torn line repaired); default: none.
        client: an existing Client to use (then ``hosts`` only routes).
        ray_address: run the requests on ``ray_actors`` Ray actors
            (:class:`streamkit.ray.RayExecutor`; ``"local"`` starts Ray,
            ``"auto"`` joins a cluster); this process still writes the files.

    Returns:
        a BatchSummary (``interrupted=True`` when ``stop`` was set).

    Raises:
        PromptFileError: bad lines (before any request) unless ``skip_invalid``.
        ConfigError: bad arguments, unreadable input, unwritable output, an
            output whose lines before the last are not result records.
        KeyboardInterrupt: after stopping as for ``stop``.
    """
    config = BatchConfig(
        inputs, output, model=model, system=system, options=options, format=format,
        think=think, hosts=hosts, workers=workers, ordered=ordered, resume=resume,
        skip_invalid=skip_invalid, input_format=input_format, dialect=dialect,
        timeouts=timeouts or Timeouts(), retry=retry or RetryPolicy(),
        ray_address=ray_address, ray_actors=ray_actors)
    show = sys.stderr.isatty() if progress is None else progress
    with InputFile(inputs, stdin) as (path, display):
        scan = _scan(path, config, display)
        if scan.problem_count and not skip_invalid:
            raise PromptFileError(scan.problems, scan.problem_count)
        for problem in scan.problems:
            _say(report, f"skipped: {problem}")
        if scan.problem_count > len(scan.problems):
            _say(report, f"skipped: ... and {scan.problem_count - len(scan.problems)} more")
        run = _Run(config, path, display, scan, report=report, progress=show)
        return run.execute(cache, stop or threading.Event(), client)


def _say(report: Optional[Report], message: str) -> None:
    if report is not None:
        report(message)


class _Run:
    """One batch run: output files, the dispatcher loop, counters. Used once."""

    def __init__(self, config: BatchConfig, path: str, display: str, scan: Scan, *,
                 report: Optional[Report], progress: bool) -> None:
        self.config = config
        self.path = path
        self.display = display
        self.scan = scan
        self.report = report
        self.show_progress = progress
        self.lines: Dict[str, int] = {}   # id → line number, for requests in flight
        self.submitted = 0
        self.ok = self.cached = self.failed = self.cancelled = self.tokens = 0
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.dispatcher: Any = None
        self.started = time.monotonic()

    # -- setup ------------------------------------------------------------------

    def _open_output(self) -> Tuple[RecordWriter, ErrorLog, int]:
        config = self.config
        done: Set[str] = set()
        repaired = 0
        if config.resume:
            state = scan_output(config.output)
            if state.torn_bytes:
                repair(config.output, state)
                repaired = state.torn_bytes
                _say(self.report, f"repaired {config.output}: cut off a torn last line "
                                  f"({state.torn_bytes} bytes, from an interrupted run)")
            done = state.done
        writer = RecordWriter(config.output, truncate=not config.resume, done=done)
        try:
            errors = ErrorLog(config.errors, done=done, resume=config.resume)
        except BaseException:
            writer.close()
            raise
        return writer, errors, repaired

    def _todo(self, done: Set[str]) -> int:
        if not done:
            return self.scan.prompts
        return sum(1 for i, line in self.scan.ids.ids.items()
                   if i not in done and line not in self.scan.duplicate_lines)

    # -- the input side (runs in the thread iterating Dispatcher.map) ------------

    def _requests(self, done: Set[str]) -> Iterator[Request]:
        skip = self.scan.duplicate_lines
        for item in read_prompts(self.path, self.config.format_name,
                                 default_model=self.config.model, display=self.display):
            if self.stopping.is_set():
                return
            if isinstance(item, Problem) or item.line in skip or item.id in done:
                continue
            self.lines[item.id] = item.line
            self.submitted += 1
            yield build_request(item, self.config)

    # -- the loop -----------------------------------------------------------------

    def execute(self, cache: Union[ResponseCache, str, None], stop: threading.Event,
                client: Any) -> BatchSummary:
        owned_cache, cache_obj = _open_cache(cache)
        try:
            writer, errors = None, None
            writer, errors, repaired = self._open_output()
            done = writer.done
            skipped = sum(1 for i in self.scan.ids.ids if i in done)
            todo = self._todo(done)
            bar = _progress_bar(todo) if self.show_progress and todo else None
            syncer = Syncer([writer, errors])
            try:
                self._dispatch(writer, errors, cache_obj, stop, client, bar)
            finally:
                syncer.close()
                writer.close()
                errors.close(writer.done)
                if bar is not None:
                    bar.close()
            return self._summary(todo, skipped, repaired)
        finally:
            if owned_cache is not None:
                owned_cache.close()

    def _dispatch(self, writer: RecordWriter, errors: ErrorLog, cache: Optional[ResponseCache],
                  stop: threading.Event, client: Any, bar: Any) -> None:
        dispatcher = self.dispatcher = _open_dispatcher(self.config, cache, client)
        watcher = threading.Thread(target=self._watch, args=(stop,),
                                   name="streamkit-batch-stop", daemon=True)
        watcher.start()
        last_refresh = 0.0
        try:
            results = dispatcher.map(self._requests(writer.done), ordered=self.config.ordered,
                                     return_exceptions=True)
            for result in results:
                self._record(result, writer, errors)
                if bar is not None:
                    bar.update(1)
                    now = time.monotonic()
                    if now - last_refresh >= PROGRESS_REFRESH_S:
                        last_refresh = now
                        bar.set_postfix_str(self._postfix(now), refresh=False)
        except KeyboardInterrupt:
            self.stopping.set()
            raise
        finally:
            self.finished.set()
            watcher.join(timeout=10.0)
            dispatcher.close(cancel_pending=True)

    def _watch(self, stop: threading.Event) -> None:
        """Wait for ``stop`` (or the end of the run); on stop, cancel everything in flight."""
        while not self.finished.is_set():
            if stop.wait(STOP_POLL_S):
                self.stopping.set()
                self.dispatcher.cancel_all()
                return

    def _record(self, result: Result, writer: RecordWriter, errors: ErrorLog) -> None:
        record_id = result.id or ""
        line = self.lines.pop(record_id, 0)
        if self.stopping.is_set():
            # A request may have been submitted between the stop check in
            # _requests and the watcher's cancel_all: cancel it too.
            self.dispatcher.cancel_all()
        if result.error is None:
            if writer.write(result_record(result, record_id)):
                self.ok += 1
                self.cached += int(result.cached)
                self.tokens += result.stats.eval_count or 0
            return
        if isinstance(result.error, Cancelled) and self.stopping.is_set():
            self.cancelled += 1  # not a failure: the next run does it
            return
        errors.add(error_record(record_id, line, result.error, attempts=result.attempts,
                                host=result.host or None))
        self.failed += 1

    def _postfix(self, now: float) -> str:
        # Submitted includes the dispatcher's read-ahead; at most ``workers`` run.
        outstanding = self.submitted - (self.ok + self.failed + self.cancelled)
        in_flight = min(outstanding, self.config.workers)
        rate = self.tokens / max(now - self.started, 1e-9)
        return f"failed={self.failed} in_flight={in_flight} tok/s={rate:.0f}"

    def _summary(self, todo: int, skipped: int, repaired: int) -> BatchSummary:
        interrupted = self.stopping.is_set()
        left = todo - self.ok - self.failed
        return BatchSummary(
            output=self.config.output, errors=self.config.errors, total=self.scan.prompts,
            skipped=skipped, ok=self.ok, cached=self.cached, failed=self.failed,
            invalid=self.scan.problem_count, not_run=max(left, 0) if interrupted else 0,
            interrupted=interrupted, repaired_bytes=repaired, output_tokens=self.tokens,
            elapsed_s=time.monotonic() - self.started, problems=tuple(self.scan.problems))


def _open_cache(cache: Union[ResponseCache, str, None]
                ) -> Tuple[Any, Optional[ResponseCache]]:
    """(the cache to close at the end or None, the cache to use)."""
    if isinstance(cache, str):
        from .cache import SQLiteCache
        opened = SQLiteCache(cache)
        return opened, opened
    return None, cache


def _host_slots(config: BatchConfig) -> Optional[List[HostSpec]]:
    """Hosts for the Dispatcher: a bare URL may take up to ``workers`` requests at once."""
    if config.hosts is None:
        return None
    return [(h, config.workers) if isinstance(h, str) else h for h in config.hosts]


def _open_dispatcher(config: BatchConfig, cache: Optional[ResponseCache], client: Any) -> Any:
    from .dispatch import Dispatcher
    hosts = _host_slots(config)
    if config.ray_address is not None:
        from .ray import RayExecutor
        return RayExecutor(config.ray_address, hosts=hosts, workers=config.workers,
                           actors=config.ray_actors, dialect=config.dialect,
                           timeouts=config.timeouts, retry=config.retry, cache=cache)
    if client is not None:
        return Dispatcher(client, hosts=hosts, workers=config.workers)
    return Dispatcher(hosts=hosts, workers=config.workers, dialect=config.dialect,
                      timeouts=config.timeouts, retry=config.retry, cache=cache)


def _progress_bar(total: int) -> Any:
    # Imported here: only a run with a visible bar needs tqdm (and it has no type stubs).
    tqdm = importlib.import_module("tqdm").tqdm
    return tqdm(total=total, unit="prompt", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)
