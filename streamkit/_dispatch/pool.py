"""A fixed pool of worker threads running stream jobs in submission order.

The pool follows CPython's ``concurrent.futures.thread``: a module-level
worker function that holds the pool only through a weakref, one work queue,
and a single ``None`` sentinel that each exiting worker passes on to the
next. Each worker runs one stream at a time, calling ``Stream._run()`` in its
own thread; the pool starts all its threads on first use and never grows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set

from .._http import Poller

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("streamkit")

#: Longest timed wait of a thread waiting for the pool: Ctrl-C is seen this fast.
POLL_S = 0.1


def _work(pool_ref: Any, work: Any) -> None:
    """Run jobs until the shutdown sentinel; module-level so it keeps no strong ref.

    ``pool_ref`` is a ``weakref.ref`` to the Pool: a forgotten pool can be
    collected, and its weakref callback then puts the sentinel that stops us.
    """
    while True:
        job = work.get()  # blocks until a job or the sentinel: shutdown() and GC put one
        if job is not None:
            job.run()
            # Drop the job (and its stream's buffers) before blocking again.
            del job
            continue
        pool = pool_ref()
        if pool is not None and not pool.closed:
            del pool  # a stray sentinel: cannot happen today, but never exit early
            continue
        # Pass the single sentinel on so the next worker wakes up and exits too.
        work.put(None)
        return


class Job:
    """One stream queued for, or running on, a worker; ``run`` never raises."""

    __slots__ = ("cancelled", "finished", "poller", "stream")

    def __init__(self, stream: Task) -> None:
        self.stream = stream
        self.cancelled = False
        self.finished: Callable[[Job], None] = _nothing  # set by Pool.submit
        self.poller: Optional[Poller] = None  # set by Pool.submit

    def run(self) -> None:
        try:
            self._execute()
        except BaseException:  # Stream._run never raises; log rather than kill the worker
            logger.exception("a dispatcher job raised; the stream has already ended")
        finally:
            self.finished(self)

    def _execute(self) -> None:
        self.stream._run(poller=self.poller)

    def cancel(self) -> None:
        self.cancelled = True
        self.stream.cancel()


def _nothing(job: Job) -> None:
    pass


class Pool:
    """``workers`` threads named ``{name}-1``...; thread-safe.

    Their streams' bodies are read by one :class:`~.._http.Poller` (thread
    ``{name}-poller``, started on first use), so a worker sleeps while its
    stream is streaming and the per-chunk work of all of them is done in
    one thread, many reads per wake-up.

    Lock rules: ``_lock`` guards ``_closed``, ``_threads`` and ``_live``
    (the jobs queued or running); it is notified when ``_live`` empties.
    """

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._name = name
        self._work: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._live: Set[Job] = set()
        self._closed = False
        self._lock = threading.Condition(threading.Lock())
        self.poller = Poller(f"{name}-poller")

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, job: Job) -> None:
        """Queue ``job``; never blocks. Raises RuntimeError once shut down."""
        job.finished = self._job_finished
        job.poller = self.poller
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a closed Dispatcher")
            self._live.add(job)
            self._start()
            self._work.put(job)

    def _start(self) -> None:
        """Start the whole pool on first use (lock held). It never grows after that."""
        if self._threads:
            return

        # The weakref callback wakes the workers if the pool is collected unclosed.
        def wake(_: object, work: Any = self._work) -> None:
            work.put(None)
        ref = weakref.ref(self, wake)
        for n in range(1, self.workers + 1):
            thread = threading.Thread(target=_work, args=(ref, self._work),
                                      name=f"{self._name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _job_finished(self, job: Job) -> None:
        with self._lock:
            self._live.discard(job)
            if not self._live:
                self._lock.notify_all()

    def shutdown(self) -> None:
        """Refuse new jobs; workers exit once the jobs already queued have run."""
        with self._lock:
            first = not self._closed
            self._closed = True
            if first and self._threads:
                self._work.put(None)  # after every queued job: FIFO

    def cancel_all(self) -> int:
        """Cancel every job queued or running; how many. Does not wait."""
        with self._lock:
            jobs = list(self._live)
        for job in jobs:
            job.cancel()
        return len(jobs)

    def wait_idle(self, timeout: Optional[float]) -> None:
        """Wait until no job is queued or running, or ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._live:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if left <= 0:
                    return
                self._lock.wait(left)

    def join(self, timeout: float) -> None:
        """Join every worker thread, ``timeout`` seconds in all; log the ones left.
        Then close the poller (a worker still reading goes on in its own thread)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.poller.close()
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            logger.warning("dispatcher workers still running after %.0f s: %s",
                           timeout, ", ".join(stuck))
