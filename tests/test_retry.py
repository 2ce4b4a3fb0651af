"""streamkit.retry: which errors are retried, how long it waits, cancel, logging.

The unit tests drive ``Attempts`` with fake attempt functions and an injected
sleep; the tests at the end run real streams against the emulator.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import pytest
import tenacity

from streamkit.config import RetryPolicy
from streamkit.errors import (
    Cancelled,
    ConnectError,
    ModelNotFound,
    ResponseError,
    ServerBusy,
    StreamInterrupted,
    StreamTimeout,
)
from streamkit.retry import Attempts, is_retryable


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(errors: Sequence[BaseException], result: str = "ok") -> Callable[[int], str]:
    """An attempt function raising ``errors`` in turn, then returning ``result``."""
    seen: List[int] = []

    def attempt(n: int) -> str:
        seen.append(n)
        if len(seen) <= len(errors):
            raise errors[len(seen) - 1]
        return result

    attempt.seen = seen  # type: ignore[attr-defined]
    return attempt


def busy(retry_after: Optional[float] = None, status: int = 503) -> ServerBusy:
    return ServerBusy("server busy", status_code=status, retry_after=retry_after)


def make(policy: Optional[RetryPolicy] = None, *, seed: int = 1) -> Tuple[Attempts, FakeSleep]:
    sleep = FakeSleep()
    attempts = Attempts(policy or RetryPolicy(), threading.Event(), sleep=sleep,
                        rng=random.Random(seed))
    return attempts, sleep


def test_503_twice_then_success_takes_three_attempts() -> None:
    attempts, sleep = make()
    attempt = failing([busy(), busy()])
    assert attempts.call(attempt) == "ok"
    assert attempts.count == 3
    assert attempt.seen == [1, 2, 3]  # type: ignore[attr-defined]
    assert len(sleep.waits) == 2
    assert attempts.remaining() == 0


@pytest.mark.parametrize("exc", [
    ConnectError("refused"),
    StreamTimeout("connect timed out", phase="connect"),
    busy(status=429),
    busy(status=503),
    *(ResponseError("boom", status_code=s) for s in (500, 502, 503, 504)),
], ids=repr)
def test_retryable_errors_are_retried(exc: BaseException) -> None:
    attempts, _ = make()
    assert attempts.call(failing([exc])) == "ok"
    assert attempts.count == 2


@pytest.mark.parametrize("exc", [
    ModelNotFound("model 'x' not found", model="x"),
    *(ResponseError("no", status_code=s) for s in (400, 401, 403, 404, 422, 501)),
    StreamTimeout("slow model", phase="first_token"),
    StreamTimeout("idle", phase="idle"),
    StreamInterrupted("cut", partial="ab"),
    ValueError("a bug"),
], ids=repr)
def test_non_retryable_errors_fail_at_once(exc: BaseException) -> None:
    attempts, sleep = make()
    with pytest.raises(type(exc)) as info:
        attempts.call(failing([exc]))
    assert info.value is exc
    assert attempts.count == 1
    assert sleep.waits == []


def test_first_token_timeout_retried_when_opted_in() -> None:
    policy = RetryPolicy(retry_first_token_timeout=True)
    timeout = StreamTimeout("slow", phase="first_token")
    assert is_retryable(timeout, policy)
    assert not is_retryable(timeout, RetryPolicy())
    attempts, _ = make(policy)
    assert attempts.call(failing([timeout])) == "ok"
    assert attempts.count == 2


def test_give_up_raises_last_error_with_cause_not_retry_error() -> None:
    errors = []
    for i in range(3):
        try:
            raise ConnectionRefusedError(111, f"refused {i}")
        except ConnectionRefusedError as cause:
            err = ConnectError(f"cannot connect ({i})")
            err.__cause__ = cause
            errors.append(err)
    attempts, sleep = make()
    with pytest.raises(ConnectError) as info:
        attempts.call(failing(errors))
    assert info.value is errors[2]
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert not isinstance(info.value, tenacity.RetryError)
    assert attempts.count == 3
    assert len(sleep.waits) == 2


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(attempts=8, backoff_base=0.5, backoff_max=3.0)
    attempts, sleep = make(policy, seed=7)
    attempts.call(failing([ConnectError("x")] * 7))
    replica = random.Random(7)
    expected = [replica.uniform(0, min(3.0, 0.5 * 2 ** k)) for k in range(7)]
    assert sleep.waits == pytest.approx(expected)
    assert all(0 <= w <= 3.0 for w in sleep.waits)


def test_retry_after_is_waited_exactly() -> None:
    attempts, sleep = make()
    attempts.call(failing([busy(retry_after=1.5), busy(retry_after=0)]))
    assert sleep.waits == [1.5, 0.0]


def test_retry_after_over_cap_fails_at_once() -> None:
    attempts, sleep = make(RetryPolicy(retry_after_max=10))
    exc = busy(retry_after=120)
    with pytest.raises(ServerBusy) as info:
        attempts.call(failing([exc]))
    assert info.value is exc
    assert info.value.retry_after == 120
    assert attempts.count == 1
    assert sleep.waits == []


def test_custom_retry_if_replaces_default_predicate() -> None:
    bad_request = ResponseError("flaky proxy", status_code=400)
    policy = RetryPolicy(retry_if=lambda e: isinstance(e, ResponseError) and e.status_code == 400)
    attempts, _ = make(policy)
    assert attempts.call(failing([bad_request])) == "ok"
    assert attempts.count == 2
    # ...and a default-retryable error is no longer retried.
    attempts, _ = make(policy)
    with pytest.raises(ConnectError):
        attempts.call(failing([ConnectError("refused")]))
    assert attempts.count == 1


def test_custom_wait_tenacity_strategy_and_callable() -> None:
    attempts, sleep = make(RetryPolicy(wait=tenacity.wait_fixed(0.25)))
    attempts.call(failing([ConnectError("a"), ConnectError("b")]))
    assert sleep.waits == [0.25, 0.25]

    def linear(state: tenacity.RetryCallState) -> float:
        return 0.1 * state.attempt_number

    attempts, sleep = make(RetryPolicy(wait=linear))
    attempts.call(failing([ConnectError("a"), ConnectError("b")]))
    assert sleep.waits == pytest.approx([0.1, 0.2])
    # A server's Retry-After still wins over a custom wait.
    attempts, sleep = make(RetryPolicy(wait=tenacity.wait_fixed(0.25)))
    attempts.call(failing([busy(retry_after=2)]))
    assert sleep.waits == [2]


def test_budget_is_shared_across_calls() -> None:
    attempts, _ = make(RetryPolicy(attempts=3))
    assert attempts.call(failing([ConnectError("x")])) == "ok"
    assert attempts.count == 2
    assert attempts.remaining() == 1
    seen: List[int] = []

    def replay(n: int) -> str:
        seen.append(n)
        raise ConnectError("still down")

    with pytest.raises(ConnectError):
        attempts.call(replay)
    assert seen == [3]  # numbering continues; only one attempt was left
    assert attempts.remaining() == 0
    with pytest.raises(RuntimeError):
        attempts.call(replay)


def test_each_retry_is_logged_with_cause_and_wait(caplog: pytest.LogCaptureFixture) -> None:
    attempts, _ = make(RetryPolicy(wait=tenacity.wait_fixed(0.5)))
    with caplog.at_level(logging.INFO, logger="streamkit"):
        attempts.call(failing([busy(), ConnectError("refused by 127.0.0.1")]))
    records = [r for r in caplog.records if r.name == "streamkit"]
    assert len(records) == 2
    assert "ServerBusy" in records[0].getMessage()
    assert "ConnectError: refused by 127.0.0.1" in records[1].getMessage()
    assert all("0.50 s" in r.getMessage() for r in records)
    assert "attempt 1 of 3" in records[0].getMessage()


def test_retry_log_keeps_text_not_the_exception(caplog: pytest.LogCaptureFixture) -> None:
    # A kept record must not pin the failed attempt's traceback (and its sockets).
    attempts, _ = make()
    with caplog.at_level(logging.INFO, logger="streamkit"):
        attempts.call(failing([ConnectError("refused")]))
    (record,) = [r for r in caplog.records if r.name == "streamkit"]
    assert "ConnectError: refused" in record.getMessage()
    assert record.exc_info is None
    assert not any(isinstance(arg, BaseException) for arg in record.args or ())


def test_retry_if_is_asked_once_per_failure() -> None:
    asked: List[BaseException] = []

    def retry_if(exc: BaseException) -> bool:
        asked.append(exc)
        return isinstance(exc, ConnectError)

    errors = [ConnectError("a"), ConnectError("b"), ModelNotFound("gone", model="m")]
    attempts, sleep = make(RetryPolicy(attempts=5, retry_if=retry_if))
    with pytest.raises(ModelNotFound):
        attempts.call(failing(errors))
    assert asked == errors
    assert attempts.count == 3
    assert len(sleep.waits) == 2


def test_success_needs_no_tenacity_and_failure_numbering_is_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import streamkit.retry as retry_module

    built: List[int] = []
    real = retry_module.Retrying

    def counting(*args: object, **kwargs: object) -> tenacity.Retrying:
        built.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retry_module, "Retrying", counting)
    attempts, sleep = make(RetryPolicy(attempts=4))
    assert attempts.call(failing([])) == "ok"
    assert built == []  # the common case pays nothing for the retry machinery
    attempts, sleep = make(RetryPolicy(attempts=4, wait=lambda s: float(s.attempt_number)))
    assert attempts.call(failing([busy(), busy()])) == "ok"
    assert built == [1]
    assert sleep.waits == [1.0, 2.0]  # tenacity counted the bare first attempt as 1


def test_cancel_before_call_raises_cancelled_without_attempt() -> None:
    cancel = threading.Event()
    cancel.set()
    attempts = Attempts(RetryPolicy(), cancel, sleep=FakeSleep())
    attempt = failing([])
    with pytest.raises(Cancelled):
        attempts.call(attempt)
    assert attempt.seen == []  # type: ignore[attr-defined]
    assert attempts.count == 0


def test_attempt_broken_by_cancel_raises_cancelled_not_retried() -> None:
    cancel = threading.Event()
    attempts = Attempts(RetryPolicy(), cancel, sleep=FakeSleep())

    def attempt(n: int) -> str:
        cancel.set()  # as if cancel() shut the socket down under this attempt
        raise ConnectError("connection reset")

    with pytest.raises(Cancelled) as info:
        attempts.call(attempt)
    assert isinstance(info.value.__cause__, ConnectError)
    assert attempts.count == 1


def test_cancel_during_long_backoff_returns_within_100ms() -> None:
    """A 30 s Retry-After wait ends as soon as the cancel Event is set."""
    cancel = threading.Event()
    attempts = Attempts(RetryPolicy(retry_after_max=60), cancel)  # real Event-based sleep
    sleeping = threading.Event()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sleeping.set()  # before_sleep runs right before the wait starts

    handler = OnRetry()
    log = logging.getLogger("streamkit")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    outcome: List[BaseException] = []
    returned = threading.Event()

    def run() -> None:
        try:
            attempts.call(failing([busy(retry_after=30)]))
        except BaseException as exc:
            outcome.append(exc)
        returned.set()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert sleeping.wait(5)
        started = time.monotonic()
        cancel.set()
        assert returned.wait(5)
        elapsed = time.monotonic() - started
    finally:
        cancel.set()
        worker.join(5)
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert elapsed < 0.1
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert attempts.count == 1


def test_real_retry_after_wait_is_at_least_retry_after() -> None:
    attempts = Attempts(RetryPolicy(), threading.Event())
    started = time.monotonic()
    assert attempts.call(failing([busy(retry_after=0.3)])) == "ok"
    assert time.monotonic() - started >= 0.3


# -- real streams against the emulator ---------------------------------------------------

from streamkit.client import Client  # noqa: E402  (integration part of this module)
from streamkit.emulator import Emulator, EmulatorConfig  # noqa: E402

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig()) as emu:
        yield emu


def test_stream_503_twice_then_success_has_three_attempts(emulator: Emulator) -> None:
    emulator.set_faults("status:503,first=2")
    try:
        with Client(emulator.url, retry=FAST) as client:
            result = client.generate("demo", "hi").result(timeout=10)
    finally:
        emulator.set_faults("")
    assert result.ok and result.attempts == 3 and result.text


def test_stream_honours_retry_after_seconds(emulator: Emulator) -> None:
    emulator.set_faults("status:503,retry_after=1,first=1")
    try:
        with Client(emulator.url, retry=FAST) as client:
            started = time.monotonic()
            result = client.generate("demo", "hi").result(timeout=10)
            waited = time.monotonic() - started
    finally:
        emulator.set_faults("")
    assert result.ok and result.attempts == 2
    assert waited >= 1.0


def test_stream_404_is_never_retried(emulator: Emulator) -> None:
    before = emulator.counters()["requests"]
    with Client(emulator.url, retry=FAST) as client:
        result = client.generate("no-such-model", "hi").result(timeout=10)
    assert isinstance(result.error, ModelNotFound)
    assert result.attempts == 1
    assert emulator.counters()["requests"] == before + 1


def test_stream_connect_refusal_retries_then_connect_error_with_cause() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retry=FAST) as client:
        result = client.generate("demo", "hi").result(timeout=10)
    assert isinstance(result.error, ConnectError)
    assert result.error.__cause__ is not None
    assert result.attempts == 3


def test_stream_cancel_during_30s_retry_after_returns_within_100ms(emulator: Emulator) -> None:
    emulator.set_faults("status:503,retry_after=30")
    waiting = threading.Event()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying in 30.00 s" in record.getMessage():
                waiting.set()

    handler = OnRetry()
    log = logging.getLogger("streamkit")
    log.addHandler(handler)
    try:
        with Client(emulator.url) as client:
            stream = client.generate("demo", "hi")
            assert waiting.wait(10)
            started = time.monotonic()
            stream.cancel()
            result = stream.result(timeout=5)
            elapsed = time.monotonic() - started
    finally:
        log.removeHandler(handler)
        emulator.set_faults("")
    assert isinstance(result.error, Cancelled)
    assert result.attempts == 1
    assert elapsed < 0.1
