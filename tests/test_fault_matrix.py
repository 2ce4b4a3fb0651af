"""The fault matrix: every fault the emulator injects, and raw-socket faults it cannot,
for chat and generate: success after N attempts, or a named error with the right
``.partial`` text. docs/fault-matrix.md is the same table for humans.

Each case states the outcome once; the endpoint and dialect are parameters, so
adding a dialect means adding it to ``DIALECTS`` (and, for raw-socket cases,
teaching ``rawserver.Wire`` its records). Tight timeouts keep every case under a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import pytest
from rawserver import RawConn, RawServer, Wire, chunk

from streamkit import (
    ConnectError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    Result,
    RetryPolicy,
    ServerBusy,
    ServerStreamError,
    StreamInterrupted,
    StreamTimeout,
    Timeouts,
)
from streamkit.client import Client
from streamkit.emulator import Emulator, EmulatorConfig, expected

MODEL = "demo"
PROMPT = "What happens when things go wrong?"
MESSAGES = [{"role": "user", "content": PROMPT}]
RESPONSE_TOKENS = (12, 12)  # every answer 12 tokens: room for after=K up to 11
TIMEOUTS = Timeouts(connect=2, first_token=2, idle=0.4, total=20)
FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
FULL = -1  # partial = the whole text

DIALECTS = ["ollama", "openai"]
ENDPOINTS = ["chat", "generate"]


@dataclass(frozen=True)
class Case:
    """One row: a fault and what the caller sees.

    ``error`` None means success; ``attempts`` is ``Result.attempts``;
    ``partial`` is the number of tokens in ``.partial`` (FULL: all of them).
    """

    name: str
    fault: Optional[str] = None
    raw: Optional[str] = None  # a key of RAW_HANDLERS
    error: Optional[Type[BaseException]] = None
    attempts: int = 1
    partial: int = 0
    phase: Optional[str] = None
    timeouts: Timeouts = TIMEOUTS
    check: Optional[Callable[[Result], None]] = field(default=None, compare=False)
    openai_error: Optional[Type[BaseException]] = None  # when /v1 differs
    known_bug: Optional[str] = None  # strict xfail: remove when the bug is fixed

    def error_for(self, dialect: str) -> Optional[Type[BaseException]]:
        return self.openai_error if dialect == "openai" and self.openai_error else self.error


def _retry_after_120(result: Result) -> None:
    assert isinstance(result.error, ServerBusy) and result.error.retry_after == 120


def _not_model_not_found(result: Result) -> None:
    assert not isinstance(result.error, ModelNotFound)


def _retry_after_date(result: Result) -> None:
    assert isinstance(result.error, ServerBusy)
    assert result.error.retry_after is not None and 290 <= result.error.retry_after <= 300


CASES = [
    Case("no fault"),
    # -- before any response byte: retried -------------------------------------------
    Case("connection closed before the status line", "refuse,first=2", attempts=3),
    Case("connection reset before the status line", "reset,first=1", attempts=2),
    Case("connection always closed", "refuse", error=ConnectError, attempts=3),
    Case("503 busy twice", "status:503,first=2", attempts=3),
    Case("429 too many requests", "status:429,first=1", attempts=2),
    Case("500 internal error", "status:500,first=1", attempts=2),
    Case("502 bad gateway", "status:502,first=1", attempts=2),
    Case("504 gateway timeout", "status:504,first=1", attempts=2),
    Case("503 until attempts run out", "status:503", error=ServerBusy, attempts=3),
    Case("503 with Retry-After: 0", "status:503,retry_after=0,first=1", attempts=2),
    Case("Retry-After over retry_after_max", "status:503,retry_after=120",
         error=ServerBusy, attempts=1, check=_retry_after_120),
    Case("Retry-After as an HTTP date over the cap", "status:503,retry_after_date=300",
         error=ServerBusy, attempts=1, check=_retry_after_date),
    # -- before any response byte: not retried ---------------------------------------
    Case("400 bad request", "status:400", error=ResponseError, attempts=1),
    Case("401 unauthorized", "status:401", error=ResponseError, attempts=1),
    Case("403 forbidden", "status:403", error=ResponseError, attempts=1),
    Case("404 model not found", "status:404,message=model 'demo' not found",
         error=ModelNotFound, attempts=1),
    Case("404 wrong path (not a model error)", "status:404", error=ResponseError,
         attempts=1, check=lambda r: _not_model_not_found(r)),
    Case("422 unprocessable", "status:422", error=ResponseError, attempts=1),
    Case("slow headers within first_token", "slow_headers,delay=0.3", attempts=1),
    Case("slow headers past first_token", "slow_headers,delay=3", error=StreamTimeout,
         attempts=1, phase="first_token",
         timeouts=Timeouts(connect=2, first_token=0.3, idle=0.4, total=20)),
    # -- after the first chunk: committed, never retried -----------------------------
    Case("cut after 3 chunks", "cut,after=3", error=StreamInterrupted, partial=3),
    Case("cut before the first chunk", "cut,after=0", error=StreamInterrupted, partial=0),
    Case("stall after 4 chunks", "stall,after=4", error=StreamTimeout, partial=4,
         phase="idle"),
    Case("stall before the first chunk", "stall,after=0", error=StreamTimeout, partial=0,
         phase="first_token", timeouts=Timeouts(connect=2, first_token=0.4, idle=5,
                                                total=20)),
    # On /v1 Ollama turns an in-band error into an empty chunk and an end without
    # [DONE]: the client can only see an interrupted stream.
    Case("in-band error after 5 chunks", "error,after=5", error=ServerStreamError, partial=5,
         openai_error=StreamInterrupted),
    Case("in-band error as the only line (pre-0.12.6)", "error,after=0",
         error=ServerStreamError, partial=0, openai_error=StreamInterrupted),
    Case("malformed line after 2 chunks", "malformed,after=2", error=ProtocolError, partial=2),
    Case("blank lines between chunks", "blank", attempts=1),
    Case("body ends without done", "nodone", error=StreamInterrupted, partial=FULL),
    # -- raw-socket faults the emulator cannot produce -------------------------------
    Case("RST before the status line, then a good reply", raw="reset_then_ok", attempts=2),
    Case("RST before the status line, always", raw="reset", error=ConnectError, attempts=3),
    Case("chunked body truncated mid-stream", raw="truncated", error=StreamInterrupted,
         partial=2),
    Case("half-written last line, body then ends", raw="half_line_end",
         error=StreamInterrupted, partial=2),
    Case("half-written line, connection cut", raw="half_line_cut",
         error=StreamInterrupted, partial=2),
    Case("bad chunked framing", raw="bad_chunk", error=ProtocolError, partial=2),
    # an unterminated record on a broken connection may itself be cut short: dropped
    Case("whole record without its terminator, connection cut", raw="unended_event_cut",
         error=StreamInterrupted, partial=2),
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(response_tokens=RESPONSE_TOKENS)) as emu:
        yield emu


def body_for(endpoint: str) -> Dict[str, Any]:
    return {"messages": MESSAGES} if endpoint == "chat" else {"prompt": PROMPT}


def tokens_for(endpoint: str) -> List[str]:
    return list(expected(MODEL, body_for(endpoint),
                         EmulatorConfig(response_tokens=RESPONSE_TOKENS)).tokens)


def start(client: Client, endpoint: str) -> Any:
    if endpoint == "chat":
        return client.chat(MODEL, MESSAGES)
    return client.generate(MODEL, PROMPT)


# -- raw-socket handlers (either dialect, through rawserver.Wire) -----------------------

def _good(wire: Wire, tokens: List[str]) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": wire.content_type})
        for token in tokens:
            conn.send_chunk(wire.token(token))
        conn.send_chunk(wire.end(len(tokens)))
        conn.end_chunks()
    return handler


def _two_then(wire: Wire, tokens: List[str], tail: bytes,
              finish: Callable[[RawConn], None]) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": wire.content_type})
        conn.send_chunk(wire.token(tokens[0]) + wire.token(tokens[1]))
        if tail:
            conn.send(tail)
        finish(conn)
    return handler


def _bad_chunk(wire: Wire, tokens: List[str]) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": wire.content_type})
        good = wire.token(tokens[0]) + wire.token(tokens[1])
        # One write: good records and the broken framing arrive in the same read.
        conn.send(chunk(good) + b"zz\r\nnonsense\r\n")
        conn.cut()
    return handler


def raw_handlers(kind: str, endpoint: str, dialect: str) -> List[Callable[[RawConn], None]]:
    wire = Wire(dialect, endpoint, MODEL)
    tokens = tokens_for(endpoint)
    # the first 15 bytes of a record: inside its JSON (NDJSON line or SSE data: line)
    half = wire.token(tokens[2])[:15]
    # a whole record without its terminator: NDJSON without the newline, SSE with
    # its data: line but not the blank line that ends the event
    unended = wire.token(tokens[2]).rstrip(b"\n") + (b"\n" if dialect == "openai" else b"")
    reset = RawConn.reset
    table: Dict[str, List[Callable[[RawConn], None]]] = {
        "reset_then_ok": [reset, _good(wire, tokens)],
        "reset": [reset],
        "truncated": [_two_then(wire, tokens, b"40\r\n" + b"x" * 10, RawConn.cut)],
        "half_line_end": [_two_then(wire, tokens, b"", lambda c: (
            c.send_chunk(half), c.end_chunks()))],
        "half_line_cut": [_two_then(wire, tokens, b"", lambda c: (
            c.send_chunk(half), c.cut()))],
        "bad_chunk": [_bad_chunk(wire, tokens)],
        "unended_event_cut": [_two_then(wire, tokens, b"", lambda c: (
            c.send_chunk(unended), c.cut()))],
    }
    return table[kind]


# -- the matrix ------------------------------------------------------------------------

def run_case(case: Case, url: str, endpoint: str, dialect: str) -> Tuple[Result, float]:
    started = time.monotonic()
    with Client(url, dialect=dialect, timeouts=case.timeouts, retry=FAST_RETRY) as client:
        stream = start(client, endpoint)
        with stream:
            result = stream.result(timeout=30)
    return result, time.monotonic() - started


def check_outcome(case: Case, result: Result, endpoint: str, dialect: str) -> None:
    tokens = tokens_for(endpoint)
    error = case.error_for(dialect)
    assert result.attempts == case.attempts, result.error
    if error is None:
        assert result.error is None, repr(result.error)
        assert result.text == "".join(tokens)
        return
    assert isinstance(result.error, error), repr(result.error)
    want = "".join(tokens if case.partial == FULL else tokens[:case.partial])
    assert getattr(result.error, "partial", "") == want
    assert result.text == want
    if case.phase is not None:
        assert isinstance(result.error, StreamTimeout) and result.error.phase == case.phase
    if case.check is not None:
        case.check(result)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_matrix(case: Case, endpoint: str, dialect: str, emulator: Emulator,
                      request: pytest.FixtureRequest) -> None:
    if case.known_bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.known_bug))
    if case.raw is not None:
        with RawServer(raw_handlers(case.raw, endpoint, dialect)) as server:
            result, elapsed = run_case(case, server.url, endpoint, dialect)
    else:
        emulator.set_faults(case.fault or "")
        try:
            result, elapsed = run_case(case, emulator.url, endpoint, dialect)
        finally:
            emulator.set_faults("")
    check_outcome(case, result, endpoint, dialect)
    assert elapsed < 10  # tight timeouts: no case comes near a hang


def test_matrix_covers_every_emulator_fault_kind() -> None:
    from streamkit._emulator.faults import KINDS
    covered = {c.fault.split(",")[0].split(":")[0] for c in CASES if c.fault}
    assert set(KINDS) <= covered
    kinds = {c.fault.split(",")[0] for c in CASES if c.fault} | {c.raw for c in CASES if c.raw}
    assert len(kinds) >= 15
