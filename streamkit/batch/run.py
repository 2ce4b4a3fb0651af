"""Batch runs of prompt files: validated, resumable, exactly once.

``run_batch(inputs, output, ...)`` reads a prompt file (see
:mod:`streamkit.batch.input` for the formats), validates every line before
the first request, sends the prompts through a :class:`~streamkit.Dispatcher`
and appends one JSON line per answer to ``output``. Failures go to
``OUTPUT.errors.jsonl`` (``results.jsonl`` → ``results.errors.jsonl``).

Resume is the default: ids already in ``output`` are skipped, a torn last
line left by a crash is cut off first, and an id is never written twice.
An id whose request changed since its answer was written (an edited
prompt, a line inserted in a ``.txt`` file) is run again; its old line is
dropped from ``output`` first. Failed ids have no line in ``output``, so
the next run retries them. See :mod:`streamkit.batch.reopen` for how an
output is reopened and :mod:`streamkit.batch.output` for the file rules.
One run at a time per output: a second one raises
:class:`~streamkit.batch.lock.OutputBusy`.

Stopping: set the ``stop`` Event (the CLI does so on the first Ctrl-C or
SIGTERM) and the run stops reading input, cancels the streams in flight (the
server stops generating), writes what has completed, and returns a summary
with ``interrupted=True``. A KeyboardInterrupt raised inside ``run_batch``
does the same cleanup, then propagates.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
import time
from dataclasses import replace
from typing import IO, Any, Callable, Dict, Iterator, Optional, Set, Tuple, Union

from ..errors import Cancelled
from ..records import ChatRequest, GenerateRequest, Request, ResponseCache, Result
from .cache import digest_keyed, request_key
from .check import PromptFileError, Scan, scan_file
from .config import BatchConfig
from .executor import ExecutorFactory, open_executor
from .input import InputFile, read_prompts
from .lock import OutputLock
from .models import ModelCheck
from .output import ErrorLog, RecordWriter, Syncer, require_regular_file
from .promptline import Problem, PromptLine
from .records import error_record, result_record
from .reopen import open_output
from .summary import BatchSummary

__all__ = ["BatchSummary", "build_request", "run_batch"]

STOP_POLL_S = 0.05          # how fast the stop watcher sees ``stop`` being set
PROGRESS_REFRESH_S = 0.25   # postfix updates (failed, in flight, tok/s) at most this often
PROGRESS_LINE_S = 5.0       # without a bar (not a terminal): a progress line this often,
PROGRESS_FIRST_S = 2.0      # the first one this soon

log = logging.getLogger("streamkit")

Report = Callable[[str], None]


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
                           think=think, images=line.images, id=line.id)


# --- the run -------------------------------------------------------------------


def run_batch(inputs: str, output: str, *, config: Optional[BatchConfig] = None,
              stop: Optional[threading.Event] = None, report: Optional[Report] = None,
              stdin: Optional[IO[bytes]] = None, client: Any = None,
              executor: Optional[ExecutorFactory] = None, builtin: bool = False,
              **options: Any) -> BatchSummary:
    """Run every prompt of ``inputs`` not yet in ``output``; append the answers.

    Args:
        inputs: a ``.jsonl``, ``.txt`` or ``.csv`` file, or ``"-"`` for stdin
            (spooled to a temporary file: it is read twice).
        output: the results file (JSONL); failures go to ``errors_path(output)``.
        config: a BatchConfig to start from (``inputs``, ``output`` and
            ``options`` replace its fields).
        options: BatchConfig fields by name: ``model``, ``hosts``,
            ``workers``, ``cache``... (see :class:`BatchConfig`).
        stop: set it (from any thread or a signal handler) to stop the run.
        report: called with each message worth showing (skipped bad lines,
            the torn line repaired); default: none.
        client: an existing Client to use (then ``hosts`` only routes).
        executor: ``(config, hosts, cache) -> executor`` with the Dispatcher's
            ``map``/``cancel_all``/``close``, run instead of a Dispatcher
            (``streamkit.ray`` passes its Ray executor).
        stdin: the stream read for ``inputs == "-"`` (default: ``sys.stdin``).
        builtin: the hosts are the command line's built-in emulator: a missing
            model's message says how to serve more, not ``ollama pull``.

    Returns:
        a BatchSummary (``interrupted=True`` when ``stop`` was set).

    Raises:
        PromptFileError: bad lines (before any request) unless ``skip_invalid``.
        ModelNotFound: before any request, a model no host has (see
            :mod:`streamkit.batch.models`); later ones fail their lines.
        ConfigError: bad options, unreadable input, unwritable output, an
            output whose lines before the last are not result records, an
            output that is not a regular file.
        OutputBusy: another run holds the output's lock (a ConfigError).
        OutputWriteError: the disk filled up (what was written is kept).
        KeyboardInterrupt: after stopping as for ``stop``.
        TypeError: an option that is not a BatchConfig field.
    """
    if config is None:
        config = BatchConfig(inputs, output, **options)
    else:
        config = replace(config, inputs=inputs, output=output, **options)
    show = sys.stderr.isatty() if config.progress is None else config.progress
    with InputFile(inputs, stdin) as (path, display):
        scan = scan_file(path, config, display)
        try:
            if scan.problem_count and not config.skip_invalid:
                raise PromptFileError(scan.problems, scan.problem_count)
            for problem in scan.problems:
                _say(report, f"skipped: {problem}")
            if scan.problem_count > len(scan.problems):
                _say(report, f"skipped: ... and {scan.problem_count - len(scan.problems)} more")
            models = ModelCheck(config, client, builtin=builtin, report=report)
            stop = stop or threading.Event()
            if config.embed or config.output_format != "jsonl":  # see batch/embed.py
                from .embed import run_embed_batch
                return run_embed_batch(config, scan, path, lambda journal: _Run(
                    journal, path, display, scan, report=report, progress=show,
                    executor=executor, models=models).execute(None, stop, client))
            run = _Run(config, path, display, scan, report=report, progress=show,
                       executor=executor, models=models)
            return run.execute(config.cache, stop, client)
        finally:
            scan.close()


def _say(report: Optional[Report], message: str) -> None:
    if report is not None:
        report(message)


class _Run:
    """One batch run: output files, the dispatcher loop, counters. Used once."""

    def __init__(self, config: BatchConfig, path: str, display: str, scan: Scan, *,
                 report: Optional[Report], progress: bool, executor: Optional[ExecutorFactory],
                 models: ModelCheck) -> None:
        self.config = config
        self.models = models
        self.executor = executor
        self.path = path
        self.display = display
        self.scan = scan
        self.report = report
        self.show_progress = progress
        self.lines: Dict[str, int] = {}   # id → line number, for requests in flight
        self.hashes: Dict[str, str] = {}  # id → request_key, for requests in flight
        self.submitted = 0
        self.ok = self.cached = self.failed = self.cancelled = self.tokens = 0
        self.restarted = 0
        self.uncounted = self.chunks = 0
        self.todo = 0                     # prompts this run sends (set by execute)
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.dispatcher: Any = None
        self.started = time.monotonic()

    # -- setup ------------------------------------------------------------------

    def _line_hash(self, item: PromptLine) -> Optional[str]:
        """The ``request_hash`` a record of ``item`` would carry now (None: it cannot have one)."""
        if self.config.embed:  # an embed record's hash: see batch/embed.py
            from .embed import line_key
            return line_key(item, self.config)
        return request_key(build_request(item, self.config))

    # -- the input side (runs in the thread iterating Dispatcher.map) ------------

    def _requests(self, done: Set[str]) -> Iterator[Request]:
        skip = self.scan.duplicate_lines
        for item in read_prompts(self.path, self.config.format_name,
                                 default_model=self.config.model, display=self.display,
                                 prompt_column=self.config.prompt_column,
                                 id_column=self.config.id_column):
            if self.stopping.is_set():
                return
            if isinstance(item, Problem) or item.line in skip or item.id in done:
                continue
            request = build_request(item, self.config)
            self.lines[item.id] = item.line
            self.hashes[item.id] = request_key(request)
            self.submitted += 1
            yield request

    # -- the loop -----------------------------------------------------------------

    def execute(self, cache: Union[ResponseCache, str, None], stop: threading.Event,
                client: Any) -> BatchSummary:
        require_regular_file(self.config.output)
        with OutputLock(self.config.output):
            self.models.check(self.scan.models)  # local checks first, then one ask a host
            return self._execute(cache, stop, client)

    def _execute(self, cache: Union[ResponseCache, str, None], stop: threading.Event,
                 client: Any) -> BatchSummary:
        owned_cache, cache_obj = _open_cache(cache)
        try:
            if cache_obj is not None:
                cache_obj = digest_keyed(cache_obj, self.config.hosts, self.config.dialect,
                                         self.models.listed)
            writer, errors, repaired = open_output(   # the lock is held (execute)
                self.config, self.path, self.display, self.scan, line_hash=self._line_hash,
                say=functools.partial(_say, self.report))
            done = writer.done
            skipped = self.scan.ids.count_in(done) if done else 0
            todo = self.scan.prompts - skipped
            bar = _progress_bar(todo) if self.show_progress and todo else None
            syncer = Syncer([writer, errors])
            self.todo = todo
            try:
                self._dispatch(writer, errors, cache_obj, stop, client, bar)
            except BaseException:
                # Already failing (a full disk, Ctrl-C): closing must not replace the error.
                _close_quietly(syncer, writer, errors, bar)
                raise
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
        dispatcher = self.dispatcher = open_executor(self.config, cache, client,
                                                        self.executor)
        watcher = threading.Thread(target=self._watch, args=(stop,),
                                   name="streamkit-batch-stop", daemon=True)
        watcher.start()
        last_refresh = 0.0
        try:
            if self.config.embed:  # lines grouped into embed requests: see batch/embed.py
                from .embed import EmbedGroups
                return EmbedGroups(self, writer, errors, bar, PROGRESS_REFRESH_S).run(dispatcher)
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
        """Wait for ``stop`` (or the end of the run); on stop, cancel everything in flight.

        Without a bar (stderr not a terminal) it also reports a progress line
        every PROGRESS_LINE_S, so a long run shows it is alive.
        """
        lines = self.report is not None and not self.show_progress \
            and self.config.progress is None
        next_line = time.monotonic() + min(PROGRESS_FIRST_S, PROGRESS_LINE_S)
        while not self.finished.is_set():
            if stop.wait(STOP_POLL_S):
                self.stopping.set()
                self.dispatcher.cancel_all()
                return
            now = time.monotonic()
            if lines and now >= next_line and not self.finished.is_set():
                next_line = now + PROGRESS_LINE_S
                done = self.ok + self.failed
                _say(self.report, f"progress: {done}/{self.todo} prompts, "
                                  f"{now - self.started:.0f} s, {self._postfix(now)}")

    def _record(self, result: Result, writer: RecordWriter, errors: ErrorLog) -> None:
        record_id = result.id or ""
        line = self.lines.pop(record_id, 0)
        request_hash = self.hashes.pop(record_id, None)
        if self.stopping.is_set():
            # A request may have been submitted between the stop check in
            # _requests and the watcher's cancel_all: cancel it too.
            self.dispatcher.cancel_all()
        self.restarted += int(result.restarts > 0)
        if result.error is None:
            if writer.write(result_record(result, record_id, request_hash)):
                self.ok += 1
                self.cached += int(result.cached)
                if result.stats.eval_count is None and not result.cached:
                    self.uncounted += 1
                    self.chunks += result.timing.chunks
                if not result.cached:  # cached answers cost no generation: not in tok/s
                    self.tokens += result.stats.eval_count or 0
            return
        if isinstance(result.error, Cancelled) and self.stopping.is_set():
            self.cancelled += 1  # not a failure: the next run does it
            return
        error = self.models.explain(result.error, result.host or None)  # names the models
        errors.add(error_record(record_id, line, error, attempts=result.attempts,
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
            restarted=self.restarted,
            interrupted=interrupted, repaired_bytes=repaired, output_tokens=self.tokens,
            uncounted=self.uncounted, chunks=self.chunks,
            elapsed_s=time.monotonic() - self.started, problems=tuple(self.scan.problems))


def _open_cache(cache: Union[ResponseCache, str, None]
                ) -> Tuple[Any, Optional[ResponseCache]]:
    """(the cache to close at the end or None, the cache to use)."""
    if isinstance(cache, str):
        from .cache import SQLiteCache
        opened = SQLiteCache(cache)
        return opened, opened
    return None, cache


def _close_quietly(syncer: Syncer, writer: RecordWriter, errors: ErrorLog, bar: Any) -> None:
    for close in (syncer.close, writer.close, lambda: errors.close(writer.done),
                  bar.close if bar is not None else None):
        if close is None:
            continue
        try:
            close()
        except Exception as exc:
            log.warning("batch: while stopping: %s", exc)


def _progress_bar(total: int) -> Any:
    # Imported here: only a run with a visible bar needs tqdm (and it has no type stubs).
    tqdm = importlib.import_module("tqdm").tqdm
    return tqdm(total=total, unit="prompt", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)
