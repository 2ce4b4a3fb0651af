"""The Ray-free half of :mod:`streamkit.ray`: what runs inside an actor, and the data shapes.

Nothing here imports Ray, so it is unit-testable without the extra and
importable on any worker. :mod:`streamkit.ray` wraps it in Ray actors.

- Slots: :func:`split_count` / :func:`split_hosts` divide a cluster-wide
  per-host limit among actors (the rule is in docs/ray.md).
- Rows: :func:`row_request` validates a Ray Data row by the batch-line rules
  and builds its request; :func:`row_output` is the row that comes back.
- :class:`StreamkitUDF`: the ``Dataset.map_batches`` callable class (rows in,
  rows out through an :class:`ActorBody`); :mod:`streamkit.ray` exports it.
- Results cross process boundaries as :data:`Packed` tuples: a Result with
  its error replaced by (type name, message, status code), because streamkit's
  errors take keyword-only arguments and do not unpickle.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import errors as _errors
from .batch import BatchConfig
from .batch.promptline import Problem, parse_object
from .batch.run import build_request
from .config import HostSpec, RetryPolicy, Timeouts
from .errors import Cancelled, ConfigError, ResponseError, StreamkitError
from .records import Request, Result

__all__ = ["ActorBody", "ErrorInfo", "OUTPUT_COLUMNS", "Packed", "ROW_FIELDS", "StreamkitUDF",
           "pack", "row_output", "row_request", "rows_of", "split_count", "split_hosts",
           "unpack"]

#: The row fields read as a prompt (the fields of a batch line); other columns pass through.
ROW_FIELDS = ("id", "prompt", "messages", "model", "system", "options", "format", "think")
#: The columns every output row gets (None where a failed row has no value).
OUTPUT_COLUMNS = ("response", "thinking", "done_reason", "prompt_eval_count", "eval_count",
                  "ttft_ms", "total_ms", "attempts", "host", "error")

ErrorInfo = Tuple[str, str, Optional[int]]          # type name, message, status code
Packed = Tuple[Result, Optional[ErrorInfo]]


# --- slots ---------------------------------------------------------------------


def split_count(total: int, actors: int, rank: Optional[int]) -> int:
    """Actor ``rank``'s share of ``total``: shares differ by at most one and add up to it.

    ``rank=None`` (an actor that does not know its rank, as in a Ray Data
    actor pool): the floor of ``total / actors``, so any set of actors stays
    within ``total``.
    """
    if rank is None:
        return total // actors
    return total // actors + (1 if rank < total % actors else 0)


def split_hosts(hosts: Sequence[HostSpec], actors: int,
                rank: Optional[int] = None) -> List[HostSpec]:
    """The hosts one actor uses, with its share of each ``(url, N)`` limit.

    A bare URL has no cluster-wide limit and is passed through. A host whose
    share is 0 is left out for this actor (``rank`` given), or is an error
    (``rank=None``: every actor would get 0).

    Raises:
        ConfigError: ``actors`` < 1, or an actor would be left with no host.
    """
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ConfigError(f"actors must be an int >= 1, got {actors!r}")
    mine: List[HostSpec] = []
    for spec in hosts:
        if isinstance(spec, str):
            mine.append(spec)
            continue
        url, slots = spec
        share = split_count(slots, actors, rank)
        if share == 0 and rank is None:
            raise ConfigError(f"host {url} has {slots} slot(s) for {actors} actors; give it "
                              f"at least {actors} or run fewer actors")
        if share:
            mine.append((url, share))
    if not mine:
        total = sum(spec[1] for spec in hosts if not isinstance(spec, str))
        raise ConfigError(f"{actors} actors but only {total} host slot(s) in all: actor "
                          f"{rank} would have none; run fewer actors")
    return mine


# --- results across processes --------------------------------------------------


def pack(result: Result) -> Packed:
    """A picklable copy of ``result`` (its error as :data:`ErrorInfo`)."""
    error = result.error
    if error is None:
        return result, None
    status = error.status_code if isinstance(error, ResponseError) else None
    return dataclasses.replace(result, error=None), (type(error).__name__, str(error), status)


def unpack(packed: Packed) -> Result:
    """The Result again, with an error of the same streamkit class and message."""
    result, info = packed
    if info is None:
        return result
    name, message, status = info
    cls = getattr(_errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, StreamkitError)):
        cls = StreamkitError
    # Built without __init__ (its keyword-only arguments are not in ErrorInfo);
    # the class, message and status code are what the errors file records.
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if status is not None:
        error.status_code = status  # type: ignore[attr-defined]
    return dataclasses.replace(result, error=error)


def cancelled(request: Request) -> Packed:
    """The packed Result of a request cancelled before it ran."""
    return pack(Result(id=request.id, model=request.model, host="", error=Cancelled()))


# --- the actor body ------------------------------------------------------------


class ActorBody:
    """One actor's work: a Dispatcher over its share of the hosts.

    ``run`` may be called from several threads at once (Ray's threaded
    actors); the Dispatcher is shared. ``cancel(epoch)`` cancels what runs
    and makes every ``run`` of an epoch up to ``epoch`` that starts later
    return Cancelled results at once (a chunk queued at the actor when the
    driver cancelled must not start).
    """

    def __init__(self, hosts: Optional[Sequence[HostSpec]], workers: int, *,
                 dialect: str = "ollama", timeouts: Optional[Timeouts] = None,
                 retry: Optional[RetryPolicy] = None) -> None:
        from .dispatch import Dispatcher

        self._dispatcher = Dispatcher(hosts=hosts, workers=workers, dialect=dialect,
                                      timeouts=timeouts or Timeouts(),
                                      retry=retry or RetryPolicy())
        self._cancelled_epoch = -1

    def run(self, requests: Sequence[Request], epoch: int = 0) -> List[Packed]:
        """Every request's Result, packed, in completion order. Never raises for a request."""
        if epoch <= self._cancelled_epoch:
            return [cancelled(r) for r in requests]
        return [pack(r) for r in self._dispatcher.map(requests, return_exceptions=True)]

    def results(self, requests: Sequence[Request]) -> List[Result]:
        """Every request's Result (with its error object) in input order."""
        return list(self._dispatcher.map(requests, ordered=True, return_exceptions=True))

    def cancel(self, epoch: int) -> int:
        """Cancel what runs now and every later ``run`` of an epoch up to ``epoch``."""
        self._cancelled_epoch = max(self._cancelled_epoch, epoch)
        return int(self._dispatcher.cancel_all())

    def close(self) -> None:
        self._dispatcher.close(cancel_pending=True)

    def pid(self) -> int:
        """This process's id (tests and benchmarks kill actors by it)."""
        return os.getpid()


# --- rows ----------------------------------------------------------------------


def rows_of(batch: Any) -> List[Dict[str, Any]]:
    """A Ray Data batch (a dict of columns, or a pandas DataFrame) as a list of rows."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):
        batch = {str(c): batch[c].tolist() for c in batch.columns}
    if not isinstance(batch, Mapping):
        raise ConfigError(f"a batch must be a dict of columns or a pandas DataFrame (use "
                          f"batch_format='numpy' or 'pandas'), got {type(batch).__name__}")
    columns = {str(k): list(v) for k, v in batch.items()}
    size = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


def _plain(value: Any, nested: bool = False) -> Any:
    """numpy arrays and scalars as Python values (Ray Data hands nested columns as arrays).

    Arrow stores a struct field that some rows lack as a float column, so
    ``{"num_predict": 3}`` comes back as ``3.0``: inside objects, a whole
    float becomes an int again (servers reject 3.0 where they want a count).
    """
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v, True) for k, v in value.items() if not _missing(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, nested) for v in value]
    if nested and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _missing(value: Any) -> bool:
    # A column some rows lack holds None (numpy) or NaN (pandas) in the others.
    return value is None or (isinstance(value, float) and math.isnan(value))


def row_request(row: Mapping[str, Any], number: int,
                defaults: BatchConfig) -> Union[Request, str]:
    """The request for a row (id set to ``number``), or why the row is invalid."""
    fields = {k: _plain(row[k]) for k in ROW_FIELDS if k in row and not _missing(row[k])}
    item = parse_object(fields, number, "row", defaults.model)
    if isinstance(item, Problem):
        return item.message
    return dataclasses.replace(build_request(item, defaults), id=str(number))


def row_output(row: Mapping[str, Any], result: Optional[Result],
               problem: Optional[str] = None) -> Dict[str, Any]:
    """The input row plus :data:`OUTPUT_COLUMNS` (``error`` is a string or None)."""
    out = dict(row)
    out.update(dict.fromkeys(OUTPUT_COLUMNS))
    if result is None:
        out["error"] = f"ConfigError: {problem}"
        out["attempts"] = 0
        return out
    stats, timing = result.stats, result.timing
    out.update(response=result.text, thinking=result.thinking, done_reason=result.done_reason,
               prompt_eval_count=stats.prompt_eval_count, eval_count=stats.eval_count,
               ttft_ms=_ms(timing.sent_ns, timing.first_token_ns),
               total_ms=_ms(timing.started_ns, timing.done_ns),
               attempts=result.attempts, host=result.host or None)
    if result.error is not None:
        out["error"] = f"{type(result.error).__name__}: {result.error}"
    return out


def columns_of(rows: Iterable[Mapping[str, Any]]) -> Dict[str, List[Any]]:
    """Rows back into a dict of columns (every row has the same keys)."""
    rows = list(rows)
    names = list(rows[0]) if rows else list(OUTPUT_COLUMNS)
    return {name: [row.get(name) for row in rows] for name in names}


def _ms(start: Optional[int], end: Optional[int]) -> Optional[float]:
    if start is None or end is None:
        return None
    return round((end - start) / 1e6, 3)


# --- the Ray Data callable ----------------------------------------------------


def _cpus(concurrency: Any) -> int:
    """The most actors a ``concurrency`` (int, or a (min, max) autoscaling range) allows."""
    if isinstance(concurrency, (tuple, list)) and len(concurrency) == 2:
        concurrency = concurrency[1]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be an int >= 1 or a (min, max) pair, got "
                          f"{concurrency!r}")
    return concurrency


class StreamkitUDF:
    """A ``Dataset.map_batches`` callable class: prompts in, answers out.

    A row holds ``prompt`` or ``messages`` and optionally ``id``, ``model``,
    ``system``, ``options``, ``format``, ``think``, validated as a line of a
    batch file; other columns pass through. Each output row adds
    ``response``, ``thinking``, ``done_reason``, ``prompt_eval_count``,
    ``eval_count``, ``ttft_ms``, ``total_ms``, ``attempts``, ``host`` and
    ``error`` (None, or ``"Type: message"``; a failed or invalid row flows
    on, it never raises).

    Args (pass them as ``fn_constructor_kwargs``):
        hosts: ``[url, (url, N), ...]``. ``(url, N)`` caps that host at N
            requests in flight across the whole pool: each actor takes
            ``N // concurrency`` (an error when that is 0).
        concurrency: the pool size given to ``map_batches`` (for a
            ``(min, max)`` range, the max).
        workers: requests in flight per actor (default: its host slots summed).
        model, system, options, format, think: defaults for rows without them.
        dialect, timeouts, retry: Client settings.

    ``__call__`` blocks until every row of the batch has its answer, so give
    ``batch_size`` several times the actor's slots (a batch's slowest row
    holds the actor's next batch back).
    """

    def __init__(self, hosts: Sequence[HostSpec], *, concurrency: Any = 1,
                 workers: Optional[int] = None, model: Optional[str] = None,
                 system: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
                 format: Any = None, think: Any = None, dialect: str = "ollama",
                 timeouts: Optional[Timeouts] = None,
                 retry: Optional[RetryPolicy] = None) -> None:
        mine = split_hosts(list(hosts), _cpus(concurrency))
        if workers is None:
            workers = sum(h[1] if isinstance(h, tuple) else 8 for h in mine)
        self._defaults = BatchConfig("-", "rows.jsonl", model=model, system=system,
                                     options=options, format=format, think=think)
        self._body = ActorBody(mine, workers, dialect=dialect, timeouts=timeouts, retry=retry)

    def __call__(self, batch: Any) -> Dict[str, List[Any]]:
        rows = rows_of(batch)
        built = [row_request(row, i, self._defaults) for i, row in enumerate(rows)]
        requests = [r for r in built if not isinstance(r, str)]
        results = {r.id: r for r in self._body.results(requests)}
        out = [row_output(row, None, b) if isinstance(b, str) else row_output(row, results[b.id])
               for row, b in zip(rows, built)]
        return columns_of(out)
