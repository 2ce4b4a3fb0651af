"""``streamkit batch --embed``: lines grouped into embed requests, failed groups split.

Each line's text (``prompt``, or the line of a ``.txt``) is embedded. Lines
go in groups of up to ``embed_batch`` inputs per request (one request costs
the server a fixed amount besides its tokens, so grouping is what makes a
corpus fast); consecutive lines with the same model and options share a
group. The Dispatcher runs the groups on its workers and hosts.

Exactly once and resume work as for generation: each line is one record in
the output, keyed by its id, written with one ``os.write``; a rerun skips
the ids already there (see :mod:`streamkit.batch.output`). Each record
carries the ``request_hash`` of :func:`line_request`, so an id whose text
(or model, dimensions, options) changed since is embedded again and its old
line superseded (see :mod:`streamkit.batch.resume`).

A group that fails with an error that may belong to one of its inputs (a
400 such as an input over the context length with ``--no-truncate``, a 500,
a reply too large) is split in two and both halves are run again
after the current pass, down to single lines: one bad input fails only its
own line, into the error file, at the cost of about ``2 * log2(group)``
extra requests. Errors that cannot depend on the inputs (connection, model
not found, 429/503 after the retries, timeouts, cancellation) fail the
whole group.

``output_format`` ``npy`` or ``parquet``: the JSONL records still go to a
journal, ``OUT.jsonl`` (``vectors.npy`` → ``vectors.npy.jsonl``), which is
what resume reads; when a run ends without being interrupted, the matrix
is (re)written from the journal in input order (see :mod:`.matrix`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    TypeVar,
)

from ..errors import (
    Cancelled,
    ConfigError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
)
from ..records import EmbedRequest, EmbedResult
from .cache import request_key
from .input import read_prompts
from .promptline import Problem, PromptLine
from .records import encode, error_record, timing_record

if TYPE_CHECKING:
    import threading

    from .check import Scan
    from .config import BatchConfig
    from .output import ErrorLog, RecordWriter

__all__ = ["EmbedGroups", "check_embed", "embed_record", "encode_embed", "journal_path",
           "line_key", "line_request", "run_embed_batch", "splittable"]

#: Statuses that say nothing about the inputs: splitting the group would not help.
_NOT_INPUT_STATUSES = frozenset({401, 403, 404, 405, 429, 501, 503})
_EXTRAS = {"npy": ("numpy", "numpy"), "parquet": ("pyarrow", "pyarrow")}
_GENERATE_ONLY = ("system", "format", "think", "cache")


class RunState(Protocol):
    """What EmbedGroups uses of the batch run it serves (``batch.run._Run``).

    A protocol rather than an import: ``batch.run`` imports this module.
    """

    config: BatchConfig
    path: str
    display: str
    scan: Scan
    stopping: threading.Event
    submitted: int
    ok: int
    failed: int
    cancelled: int
    tokens: int

    def _postfix(self, now: float) -> str: ...


class _Summary(Protocol):
    """``batch.run.BatchSummary`` as far as :func:`run_embed_batch` needs it."""

    __dataclass_fields__: ClassVar[Dict[str, Any]]

    @property
    def interrupted(self) -> bool: ...


Summary = TypeVar("Summary", bound=_Summary)


def journal_path(config: BatchConfig) -> str:
    """Where the JSONL records go: OUT itself, or ``OUT.jsonl`` beside a matrix output."""
    return config.output if config.output_format == "jsonl" else config.output + ".jsonl"


def check_embed(config: BatchConfig) -> None:
    """The checks across options of an embed run (each option alone is checked by BatchConfig).

    Raises:
        ConfigError: a matrix format without ``--embed``, a generation-only
            option with it, or the package a format needs is not installed
            (naming the ``pip install``).
    """
    if not config.embed:
        raise ConfigError(f"--output-format {config.output_format} writes embedding vectors; "
                          "add --embed")
    if config.ray_address is not None:
        raise ConfigError("--ray does not run embed requests; leave it out with --embed")
    given = [name for name in _GENERATE_ONLY if getattr(config, name) is not None]
    if given:
        flags = ", ".join("--" + name for name in given)
        raise ConfigError(f"{flags} do(es) not apply to --embed; leave it out")
    if config.output_format in _EXTRAS:
        module, package = _EXTRAS[config.output_format]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--output-format {config.output_format} needs {package}: "
                              f"pip install {package}")


def run_embed_batch(config: BatchConfig, scan: Scan, path: str,
                    execute: Callable[[BatchConfig], Summary]) -> Summary:
    """Check ``config``, run it into its journal with ``execute``, then write the matrix.

    ``execute`` runs a BatchConfig (the journal as its output) and returns
    its summary; ``path`` is the input file (stdin spooled), read again for
    the matrix's row order. The matrix is written only when the run was not
    interrupted; the summary then names it as the output.
    """
    check_embed(config)
    summary = execute(dataclasses.replace(config, output=journal_path(config)))
    if config.output_format == "jsonl" or summary.interrupted:
        return summary
    from .matrix import write_matrix
    write_matrix(config.output_format, journal_path(config), config.output,
                 _input_ids(config, scan, path))
    return dataclasses.replace(summary, output=config.output)


def _input_ids(config: BatchConfig, scan: Scan, path: str) -> Iterator[str]:
    """The ids of the input's good lines, in input order (a duplicate's first line only)."""
    for item in read_prompts(path, config.format_name, default_model=config.model,
                             prompt_column=config.prompt_column, id_column=config.id_column):
        if not isinstance(item, Problem) and item.line not in scan.duplicate_lines:
            yield item.id


def splittable(error: BaseException) -> bool:
    """True if ``error`` may come from one input of a group (so splitting may help)."""
    if isinstance(error, (ModelNotFound, ServerBusy)):
        return False
    if isinstance(error, ResponseError):
        return error.status_code not in _NOT_INPUT_STATUSES
    # Not a timeout: a hung or overloaded server would make every half time out too.
    return isinstance(error, ProtocolError)


def line_request(line: PromptLine, config: BatchConfig) -> EmbedRequest:
    """The embed request for ``line`` alone: the line's fields over the run's defaults.

    Its :func:`~streamkit.batch.cache.request_key` is the line's
    ``request_hash``: the model, the text, ``dimensions`` and every option
    (the run's and the line's). All options, not a list of those known to
    matter: some change the vector (``num_ctx`` moves where a long input is
    cut) and which ones do is the server's business; a needless re-embed
    costs time, a stale vector is silently wrong. ``truncate`` is left out
    on purpose: a vector embedded with ``--no-truncate`` is of an input that
    fit, the same vector truncation would give, so a rerun without the flag
    (the documented way to complete the lines it failed) keeps them.
    ``keep_alive`` and the group size do not change a vector either.
    """
    model = line.model or config.model
    assert model is not None  # validation rejected lines without any model
    options = {**(config.options or {}), **(line.options or {})} or None
    return EmbedRequest(model, line.prompt or "", dimensions=config.embed_dimensions,
                        options=options, id=line.id)


def line_key(line: PromptLine, config: BatchConfig) -> Optional[str]:
    """The ``request_hash`` of ``line``'s record; None for a line that cannot be embedded."""
    return None if line.prompt is None else request_key(line_request(line, config))


def embed_record(result: EmbedResult, record_id: str, vector: List[float], group: int,
                 request_hash: Optional[str] = None) -> Dict[str, Any]:
    """The OUT record for one embedded line (the format is in docs/batch.md)."""
    record: Dict[str, Any] = {"id": record_id}
    if request_hash is not None:
        record["request_hash"] = request_hash
    record.update(model=result.model, host=result.host, embedding=vector, group=group,
                  timing=timing_record(result.timing), attempts=result.attempts)
    return record


def _floats_stdlib(vector: List[float]) -> bytes:
    return ("[" + ",".join(map(float.__repr__, vector)) + "]").encode()


_floats: Callable[[List[float]], bytes]
try:
    import orjson  # the optional extra "fast"
except ImportError:
    _floats = _floats_stdlib
else:
    _floats = orjson.dumps


def encode_embed(record: Dict[str, Any]) -> bytes:
    """``output.encode(record)``, several times faster for the vector.

    The json module calls a Python function per float; orjson (when
    installed), or ``float.__repr__`` joined in one call, does not. Both
    write the shortest text that reads back as the same float. A vector
    with a NaN or an infinity goes through ``encode`` (``NaN``, as before).
    """
    numbers = _floats(record["embedding"])
    if b"n" in numbers:  # nan, inf (repr) or null (orjson)
        return encode(record)
    rest = encode({k: v for k, v in record.items() if k != "embedding"})
    return b"".join((rest[:-2], b',"embedding":', numbers, b"}\n"))


@dataclass
class _Group:
    """Lines embedded in one request: the same model and options."""

    model: str
    options: Optional[Mapping[str, Any]]
    lines: List[PromptLine]


class EmbedGroups:
    """The embed side of one batch run; used once, by the thread iterating the Dispatcher.

    ``run`` updates the run's counters (``ok``, ``failed``, ``cancelled``,
    ``tokens``, ``submitted``) as :class:`~streamkit.batch.run._Run` does
    for generation, so its progress bar (its postfix refreshed at most every
    ``refresh_s`` seconds) and summary work unchanged.
    """

    def __init__(self, run: RunState, writer: RecordWriter, errors: ErrorLog, bar: Any,
                 refresh_s: float) -> None:
        self._run = run
        self._refresh_s = refresh_s
        self._config = run.config
        self._writer = writer
        self._errors = errors
        self._bar = bar
        self._in_flight: Dict[str, _Group] = {}
        self._halves: List[_Group] = []
        self._seq = 0
        self._refreshed = 0.0

    def run(self, dispatcher: Any) -> None:
        """Embed every line not yet done: a pass over the input, then passes over the
        halves of the groups that failed in a way splitting may fix."""
        groups: Iterable[_Group] = self._read_groups()
        while True:
            self._halves = []
            results = dispatcher.map(self._requests(groups), ordered=self._config.ordered,
                                     return_exceptions=True)
            for result in results:
                self._record(result, dispatcher)
            if not self._halves or self._run.stopping.is_set():
                return
            groups = self._halves

    # -- the input side ---------------------------------------------------------------

    def _read_groups(self) -> Iterator[_Group]:
        config, run = self._config, self._run
        skip, done = run.scan.duplicate_lines, self._writer.done
        group: Optional[_Group] = None
        for item in read_prompts(run.path, config.format_name, default_model=config.model,
                                 display=run.display, prompt_column=config.prompt_column,
                                 id_column=config.id_column):
            if run.stopping.is_set():
                return
            if isinstance(item, Problem) or item.line in skip or item.id in done:
                continue
            if item.prompt is None:
                self._fail([item], ConfigError('a "messages" line cannot be embedded; give '
                                               'its text as "prompt"'), attempts=0, host=None)
                continue
            request = line_request(item, config)
            model, options = request.model, request.options
            if group is not None and (group.model != model or group.options != options
                                      or len(group.lines) >= config.embed_batch):
                yield group
                group = None
            if group is None:
                group = _Group(model, options, [])
            group.lines.append(item)
        if group is not None:
            yield group

    def _requests(self, groups: Iterable[_Group]) -> Iterator[EmbedRequest]:
        for group in groups:
            if self._run.stopping.is_set():
                return
            group_id = f"g{self._seq}"
            self._seq += 1
            self._in_flight[group_id] = group
            self._run.submitted += len(group.lines)
            yield EmbedRequest(group.model, tuple(line.prompt or "" for line in group.lines),
                               truncate=self._config.embed_truncate,
                               dimensions=self._config.embed_dimensions,
                               options=group.options, id=group_id)

    # -- the result side --------------------------------------------------------------

    def _record(self, result: EmbedResult, dispatcher: Any) -> None:
        run = self._run
        group = self._in_flight.pop(result.id or "")
        if run.stopping.is_set():
            # A group may have been submitted between the stop check in _requests
            # and the watcher's cancel_all: cancel it too.
            dispatcher.cancel_all()
        error = result.error
        if error is None and len(result.vectors) != len(group.lines):
            error = ProtocolError(f"the server sent {len(result.vectors)} vectors for "
                                  f"{len(group.lines)} inputs")
        if error is None:
            for line, vector in zip(group.lines, result.vectors):
                record = embed_record(result, line.id, vector, len(group.lines),
                                      line_key(line, self._config))
                if self._writer.write_encoded(line.id, encode_embed(record)):
                    run.ok += 1
            run.tokens += result.prompt_eval_count or 0
            self._advance(len(group.lines))
        elif isinstance(error, Cancelled) and run.stopping.is_set():
            run.cancelled += len(group.lines)  # not a failure: the next run does it
        elif len(group.lines) > 1 and splittable(error):
            half = len(group.lines) // 2
            run.submitted -= len(group.lines)  # its halves count them again
            self._halves += [_Group(group.model, group.options, group.lines[:half]),
                             _Group(group.model, group.options, group.lines[half:])]
        else:
            self._fail(group.lines, error, attempts=result.attempts, host=result.host or None)

    def _fail(self, lines: List[PromptLine], error: BaseException, *, attempts: int,
              host: Optional[str]) -> None:
        for line in lines:
            self._errors.add(error_record(line.id, line.line, error, attempts=attempts,
                                          host=host))
        self._run.failed += len(lines)
        self._advance(len(lines))

    def _advance(self, lines: int) -> None:
        if self._bar is None:
            return
        self._bar.update(lines)
        now = time.monotonic()
        if now - self._refreshed >= self._refresh_s:
            self._refreshed = now
            self._bar.set_postfix_str(self._run._postfix(now), refresh=False)
