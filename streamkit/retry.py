"""Retries before the first chunk: which errors, how long to wait, when to stop.

The only module that imports tenacity. A stream is retried only while nothing
has reached the consumer (connect → status line → first chunk); after that the
stream is committed and an interruption is the stream layer's business
(``RetryPolicy.on_interrupt``). :class:`Attempts` holds the attempt budget of
one stream, shared by its first request and any restarts or replays.

Choices made here (see docs/architecture.md):

- Retryable by default: :class:`ConnectError`, ``StreamTimeout(phase="connect")``,
  :class:`ServerBusy` (429/503) and ``ResponseError`` 500/502/503/504.
  Never 4xx, never :class:`ModelNotFound`, never a ``first_token`` timeout
  unless ``RetryPolicy.retry_first_token_timeout`` is set (a disconnect aborts
  a cold model load, so retrying it would restart the load again and again).
- Wait: exactly ``Retry-After`` when the server sent one, else full-jitter
  exponential backoff ``uniform(0, min(backoff_max, backoff_base * 2**k))``
  for the k-th retry (k from 0). ``RetryPolicy.wait`` replaces the backoff;
  a ``Retry-After`` is still honoured, since the server asked for it.
- A ``Retry-After`` above ``retry_after_max`` is not retried: the
  :class:`ServerBusy` (with ``retry_after`` set) is raised at once.
- Backoff sleeps wait on the stream's cancel Event, so ``cancel()`` wakes them
  at once; the call then raises :class:`Cancelled`.
- Giving up raises the last error itself (typed, its cause kept), never
  tenacity's ``RetryError``.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Callable, Optional, Tuple, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from .config import RetryPolicy
from .errors import (
    Cancelled,
    ConnectError,
    ModelNotFound,
    ResponseError,
    ServerBusy,
    StreamTimeout,
)

__all__ = ["RETRYABLE_STATUSES", "Attempts", "is_retryable"]

T = TypeVar("T")

logger = logging.getLogger("streamkit")

#: Error statuses that mean "try again later" rather than "this request is wrong".
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

Sleep = Callable[[float], None]

# One generator for every stream: seeding a new Random costs ~50 us (os.urandom),
# which would be most of the per-stream cost of the retry machinery. Its
# methods are safe to call from many threads.
_SHARED_RNG = random.Random()


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """The default choice: may ``exc`` (raised before the first chunk) be retried?"""
    if isinstance(exc, ConnectError):
        return True
    if isinstance(exc, StreamTimeout):
        return exc.phase == "connect" or (
            exc.phase == "first_token" and policy.retry_first_token_timeout)
    if isinstance(exc, ModelNotFound):
        return False
    if isinstance(exc, ResponseError):
        return exc.status_code in RETRYABLE_STATUSES
    return False


def _retry_after(exc: Optional[BaseException]) -> Optional[float]:
    if isinstance(exc, ServerBusy) and exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    return None


class _FullJitter:
    """tenacity wait strategy: ``uniform(0, min(cap, base * 2**k))`` for retry k."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 62)  # no float overflow after many retries
        return self._rng.uniform(0.0, min(self._cap, self._base * 2.0 ** exponent))


class Attempts:
    """The attempt budget of one stream: ``policy.attempts`` HTTP attempts in all.

    ``sleep`` (seconds → None) and ``rng`` are injectable for tests; by default
    backoff sleeps wait on ``cancel``. Thread-safety: one Attempts belongs to
    one stream worker; ``count`` and ``remaining()`` may be read from anywhere.
    """

    def __init__(self, policy: RetryPolicy, cancel: threading.Event, *,
                 sleep: Optional[Sleep] = None,
                 rng: Optional[random.Random] = None) -> None:
        self.policy = policy
        self.count = 0
        self._cancel = cancel
        self._sleep = sleep
        self._decided: Optional[Tuple[BaseException, bool]] = None
        self._backoff = _FullJitter(policy.backoff_base, policy.backoff_max,
                                    rng or _SHARED_RNG)

    def remaining(self) -> int:
        """Attempts still allowed (0 when the budget is spent)."""
        return max(0, self.policy.attempts - self.count)

    def call(self, attempt: Callable[[int], T]) -> T:
        """Run ``attempt(n)`` until it returns; retry what may be retried.

        ``n`` numbers attempts from 1 across every call on this object, replays
        included. Blocks in backoff sleeps (at most ``backoff_max`` or
        ``retry_after_max`` seconds each), waking at once on cancel.

        Raises:
            Cancelled: the cancel Event was set before or between attempts,
                or during an attempt that then failed.
            the last error of ``attempt``: it was not retryable, or the budget
                ran out (its ``__cause__`` is kept).
            RuntimeError: no attempts remain (check ``remaining()`` first).
        """
        budget = self.remaining()
        if budget == 0:
            raise RuntimeError("no attempts remain for this stream")
        # The first attempt runs bare: most succeed, and building tenacity's
        # machinery costs more than a short request's own HTTP work.
        try:
            return self._one(attempt)
        except BaseException as exc:  # what tenacity would catch
            if not self._should_retry(exc) or budget == 1:  # tenacity's order
                raise
            # It failed and may be retried: tenacity takes over with this
            # failure as its attempt 1 (replayed, not run again), so attempt
            # numbers, waits, stop and log lines are those of a tenacity run
            # from the start.
            pending = [exc]
            self._decided = (exc, True)

        def run(attempt: Callable[[int], T]) -> T:
            if pending:
                raise pending.pop()
            return self._one(attempt)

        retrying = Retrying(
            stop=stop_after_attempt(budget),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=self._sleep_or_cancel,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            result: T = retrying(run, attempt)
        finally:
            self._decided = None
        return result

    def _one(self, attempt: Callable[[int], T]) -> T:
        if self._cancel.is_set():
            raise Cancelled()
        self.count += 1
        try:
            return attempt(self.count)
        except Cancelled:
            raise
        except Exception as exc:
            # A cancel that broke the attempt's socket shows up as whatever
            # error the broken socket produced; the caller asked for Cancelled.
            if self._cancel.is_set():
                raise Cancelled() from exc
            raise

    def _should_retry(self, exc: BaseException) -> bool:
        decided = self._decided
        if decided is not None and decided[0] is exc:  # asked again for the replayed failure
            return decided[1]  # (policy.retry_if is called once per failure)
        if isinstance(exc, Cancelled):
            return False
        retry_after = _retry_after(exc)
        if retry_after is not None and retry_after > self.policy.retry_after_max:
            return False
        if self.policy.retry_if is not None:
            return bool(self.policy.retry_if(exc))
        return is_retryable(exc, self.policy)

    def _wait(self, state: RetryCallState) -> float:
        retry_after = _retry_after(state.outcome.exception() if state.outcome else None)
        if retry_after is not None:
            return retry_after
        if self.policy.wait is not None:
            return float(self.policy.wait(state))
        return self._backoff(state)

    def _sleep_or_cancel(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            woke_for_cancel = self._cancel.is_set()
        else:
            woke_for_cancel = self._cancel.wait(seconds)
        if woke_for_cancel:
            raise Cancelled("the stream was cancelled while waiting to retry")

    def _log_retry(self, state: RetryCallState) -> None:
        if not logger.isEnabledFor(logging.WARNING):
            return
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # A string, not the exception: a handler that keeps records (pytest's
        # log capture, a MemoryHandler) would keep its traceback, and with it
        # the frames and sockets of the failed attempt, alive.
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("attempt %d of %d failed (%s); retrying in %.2f s",
                       self.count, self.policy.attempts, reason, wait)
