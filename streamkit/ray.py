"""Run streamkit on a Ray cluster: a Ray Data building block and the ``batch --ray`` executor.

Needs the ``ray`` extra (``pip install 'streamkit[ray]'``). This is the only
module that imports Ray, and only when one of its names is used, so
``import streamkit`` never loads it.

- :class:`StreamkitUDF`: a callable class for ``Dataset.map_batches`` (actor
  pool). Each actor runs one :class:`~streamkit.Dispatcher` over its share
  of the hosts; rows in, rows out (see :func:`map_requests`). It touches no
  Ray API, so it lives with the other Ray-free parts in ``streamkit._raywork``;
  import it from here.
- :class:`RayExecutor`: what ``streamkit batch --ray`` uses instead of a
  Dispatcher: requests stream out to Ray actors, Results stream back to the
  driver, which stays the single writer of the output file.

How host limits hold cluster-wide, and what is retried where: docs/ray.md.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
from types import ModuleType
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ._raywork import ActorBody, Packed, StreamkitUDF, split_count, split_hosts, unpack
from .batch import BatchConfig
from .config import HostSpec, RetryPolicy, Timeouts, parse_host
from .errors import Cancelled, ConfigError, StreamkitError
from .records import Request, ResponseCache, Result

__all__ = ["RayExecutor", "StreamkitUDF", "batch_executor", "map_requests", "run_batch"]

#: Longest wait of the driver loop: cancel and Ctrl-C are seen this fast.
POLL_S = 0.1
#: Calls queued at each actor (each of ``chunk_size`` requests, half its workers):
#: twice its workers, so its slots stay busy while a finished call's refill travels.
CHUNKS_PER_ACTOR = 4
#: How often the driver resends a chunk whose actor is gone for good.
CHUNK_RESENDS = 2
#: How long cancel and close wait for the actors to answer.
ACTOR_CALL_TIMEOUT_S = 10.0

_MISSING = "streamkit.ray needs Ray Data: pip install 'streamkit[ray]'"


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(_MISSING) from exc
    module: ModuleType = ray  # typed here: the extra may be absent when mypy runs
    return module


# --- the Ray Data building block -------------------------------------------------


def map_requests(dataset: Any, hosts: Sequence[HostSpec], *, concurrency: Any = 1,
                 batch_size: int = 64, num_cpus: float = 1.0, **options: Any) -> Any:
    """``dataset.map_batches(StreamkitUDF, ...)`` with the pool size given to both.

    ``concurrency`` is an actor count or a ``(min, max)`` autoscaling range
    (passed on as an ``ActorPoolStrategy``).

    ``options`` are the other :class:`StreamkitUDF` arguments. Returns the
    (lazy) Dataset of answered rows.
    """
    size = concurrency if isinstance(concurrency, int) else None
    low, high = (size, size) if size is not None else concurrency
    pool = _ray().data.ActorPoolStrategy(min_size=low, max_size=high)
    return dataset.map_batches(
        StreamkitUDF, fn_constructor_kwargs={"hosts": list(hosts), "concurrency": concurrency,
                                             **options},
        compute=pool, batch_size=batch_size, num_cpus=num_cpus)


# --- the batch executor ----------------------------------------------------------


@dataclasses.dataclass
class _Chunk:
    requests: List[Request]
    actor: int
    sends: int = 1


class RayExecutor:
    """``Dispatcher.map`` over Ray actors: requests stream out, Results stream back.

    Args:
        address: as ``ray.init`` takes it: ``"auto"`` joins the running
            cluster, ``"ray://host:10001"`` a remote one, ``"local"`` starts a
            new local instance, None does what ``ray.init()`` does
            (``$RAY_ADDRESS``, the latest local cluster, else a new one).
            Ignored when Ray is already initialised in this process (then it
            is not shut down either).
        hosts: ``[url, (url, N), ...]``; ``(url, N)`` caps the host at N in
            flight across all actors (shares differ by at most one).
            None: ``$OLLAMA_HOST`` with ``workers`` slots.
        workers: requests in flight across all actors.
        actors: how many actors (each one process with its own Dispatcher).
        chunk_size: requests per actor call (default: half an actor's workers).
        max_restarts: Ray restarts a killed actor this often and reruns its
            unfinished calls; after that the driver resends them elsewhere.
        num_cpus: CPUs reserved per actor (spreads actors over nodes).
        cache: checked and filled on the driver (actors may run elsewhere).
        dialect, timeouts, retry: Client settings of every actor.
        body: the actor class (an :class:`ActorBody` subclass; tests inject faults).

    Raises:
        ConfigError: Ray is not installed, bad hosts, more actors than slots.
    """

    def __init__(self, address: Optional[str] = "local", *,
                 hosts: Optional[Sequence[HostSpec]] = None, workers: int = 8,
                 actors: int = 2, chunk_size: Optional[int] = None, max_restarts: int = 3,
                 num_cpus: float = 1.0, dialect: str = "ollama",
                 timeouts: Optional[Timeouts] = None, retry: Optional[RetryPolicy] = None,
                 cache: Optional[ResponseCache] = None, body: type = ActorBody) -> None:
        ray = self._ray = _ray()
        hosts = list(hosts) if hosts is not None else [(parse_host(), workers)]
        shares = [split_hosts(hosts, actors, rank) for rank in range(actors)]
        counts = [max(1, split_count(workers, actors, rank)) for rank in range(actors)]
        self.workers = workers
        self.chunk_size = chunk_size or max(1, max(counts) // 2)
        self._cache = cache
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
        remote = ray.remote(num_cpus=num_cpus, max_restarts=max_restarts,
                            max_task_retries=max_restarts,
                            max_concurrency=CHUNKS_PER_ACTOR + 2)(body)
        self._actors = [remote.remote(share, n, dialect=dialect, timeouts=timeouts, retry=retry)
                        for share, n in zip(shares, counts)]
        self._live = set(range(actors))
        self._epoch = 0
        self._lock = threading.Lock()
        self._closed = False
        self.duplicates = 0   # answers dropped because their id was already yielded

    # -- the Dispatcher surface batch uses ------------------------------------------

    def map(self, requests: Iterable[Request], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[Result]:
        """Run every request on the actors; yield one Result each, every id once.

        Same contract as :meth:`streamkit.Dispatcher.map`: input read lazily
        (at most ``actors * CHUNKS_PER_ACTOR * chunk_size`` outstanding), a
        request without an id gets its input index, ``ordered`` yields in
        input order. An answer for an id already yielded (an actor's call
        run twice) is dropped. A chunk whose actor is gone for good is
        resent to another actor; with none left its requests fail.

        Raises (from the iterator): the first error when ``return_exceptions``
        is False; KeyboardInterrupt after cancelling every actor's work.
        """
        if self._closed:
            raise RuntimeError("the executor is closed")
        return self._map(enumerate(requests), ordered, return_exceptions)

    def cancel_all(self) -> int:
        """Cancel what the actors run, and the chunks queued at them. Returns the actors told."""
        with self._lock:   # batch calls this from its stop watcher thread
            self._epoch += 1
            epoch = self._epoch
            live = sorted(self._live)
        refs = [self._actors[i].cancel.remote(epoch) for i in live]
        self._ray.wait(refs, num_returns=len(refs), timeout=ACTOR_CALL_TIMEOUT_S)
        return len(refs)

    def close(self, cancel_pending: bool = True) -> None:
        """Cancel (optionally), stop the actors, and shut Ray down if this started it."""
        if self._closed:
            return
        self._closed = True
        try:
            if cancel_pending and self._live:
                self.cancel_all()
        finally:
            for actor in self._actors:
                self._ray.kill(actor)
            if self._owns_ray:
                self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def actor_pids(self) -> List[int]:
        """The process id of every live actor (tests and benchmarks kill them)."""
        refs = [self._actors[i].pid.remote() for i in sorted(self._live)]
        return [int(pid) for pid in self._ray.get(refs, timeout=ACTOR_CALL_TIMEOUT_S)]

    # -- the loop ---------------------------------------------------------------------

    def _map(self, source: Iterator[Tuple[int, Request]], ordered: bool,
             return_exceptions: bool) -> Iterator[Result]:
        ray = self._ray
        pending: Dict[Any, _Chunk] = {}            # ObjectRef → chunk
        outstanding: Dict[str, Request] = {}       # sent, not yet yielded (dedupe, cache)
        order: Deque[str] = collections.deque()    # ids in input order (ordered only)
        ready: Dict[str, Result] = {}              # finished, waiting for the head
        load = [0] * len(self._actors)
        epoch = self._epoch
        exhausted = False
        try:
            while True:
                finished: List[Result] = []
                while not exhausted and self._epoch == epoch:
                    free = [i for i in self._live if load[i] < CHUNKS_PER_ACTOR]
                    if not free:
                        break
                    chunk = self._next_chunk(source, outstanding, order if ordered else None,
                                             finished)
                    if chunk is None:
                        exhausted = True
                    elif chunk:
                        actor = min(free, key=lambda i: load[i])
                        self._send(_Chunk(chunk, actor), pending, load, epoch)
                    else:
                        break   # all cache hits: hand them over before reading on
                if pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                    for ref in done:
                        finished.extend(self._collect(ref, pending, load, epoch))
                elif not finished:
                    if exhausted or self._epoch != epoch:
                        return
                    raise StreamkitError("every Ray actor is gone (restarts used up); "
                                         "the requests not yet answered were not run")
                for result in finished:
                    if outstanding.pop(str(result.id), None) is None:
                        self.duplicates += 1
                    elif ordered:
                        ready[str(result.id)] = result
                    else:
                        yield self._checked(result, return_exceptions)
                while order and order[0] in ready:
                    yield self._checked(ready.pop(order.popleft()), return_exceptions)
        except KeyboardInterrupt:
            self.cancel_all()
            raise
        finally:
            if pending and not self._closed:
                self.cancel_all()

    def _next_chunk(self, source: Iterator[Tuple[int, Request]], outstanding: Dict[str, Request],
                    order: Optional[Deque[str]], hits: List[Result]) -> Optional[List[Request]]:
        """Up to chunk_size requests to send (cache hits go to ``hits``); None at the end."""
        chunk: List[Request] = []
        read = 0
        for index, request in itertools.islice(source, self.chunk_size):
            read += 1
            if request.id is None:
                request = dataclasses.replace(request, id=str(index))
            key = str(request.id)
            outstanding[key] = request
            if order is not None:
                order.append(key)
            hit = self._cache.get(request) if self._cache is not None else None
            if hit is not None:
                hits.append(dataclasses.replace(hit, id=request.id, cached=True))
            else:
                chunk.append(request)
        return chunk if read else None

    def _send(self, chunk: _Chunk, pending: Dict[Any, _Chunk], load: List[int],
              epoch: int) -> None:
        ref = self._actors[chunk.actor].run.remote(chunk.requests, epoch)
        pending[ref] = chunk
        load[chunk.actor] += 1

    def _collect(self, ref: Any, pending: Dict[Any, _Chunk], load: List[int],
                 epoch: int) -> List[Result]:
        """The Results of a finished call; a lost call is resent or fails its requests."""
        ray = self._ray
        chunk = pending.pop(ref)
        load[chunk.actor] -= 1
        try:
            packed: List[Packed] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.ActorDiedError):
                with self._lock:
                    self._live.discard(chunk.actor)
            if self._epoch != epoch:
                return [_failed(r, Cancelled()) for r in chunk.requests]
            if self._live and chunk.sends <= CHUNK_RESENDS:
                actor = min(self._live, key=lambda i: load[i])
                self._send(_Chunk(chunk.requests, actor, chunk.sends + 1), pending, load, epoch)
                return []
            error = StreamkitError(f"the Ray actor running this request was lost: "
                                   f"{type(exc).__name__}")
            return [_failed(r, error) for r in chunk.requests]
        results = [unpack(p) for p in packed]
        if self._cache is not None:
            requests = {str(r.id): r for r in chunk.requests}
            for result in results:
                if result.error is None:
                    self._cache.put(requests[str(result.id)], result)
        return results

    @staticmethod
    def _checked(result: Result, return_exceptions: bool) -> Result:
        if result.error is not None and not return_exceptions:
            raise result.error
        return result


def _failed(request: Request, error: BaseException) -> Result:
    return Result(id=request.id, model=request.model, host="", error=error)


def batch_executor(config: BatchConfig, hosts: Optional[Sequence[HostSpec]],
                   cache: Optional[ResponseCache]) -> RayExecutor:
    """The executor a batch run with ``config.ray_address`` set uses (a batch ``executor``)."""
    return RayExecutor(config.ray_address, hosts=hosts, workers=config.workers,
                       actors=config.ray_actors, dialect=config.dialect,
                       timeouts=config.timeouts, retry=config.retry, cache=cache)


def run_batch(inputs: str, output: str, **options: Any) -> Any:
    """:func:`streamkit.batch.run_batch` with the requests run on Ray actors.

    ``options`` are the same (BatchConfig fields, ``stop``, ``report``...);
    ``ray_address`` defaults to ``"local"`` (start Ray here; ``"auto"`` joins
    a running cluster) and ``ray_actors`` to 2. This process stays the only
    writer of ``output``, so exactly-once does not depend on Ray.
    """
    from .batch import run_batch as _run_batch

    options.setdefault("ray_address", "local")
    return _run_batch(inputs, output, executor=batch_executor, **options)
