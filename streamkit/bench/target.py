"""The bench's side of the wire: prompts, requests, and the send function.

:class:`Sender` turns a :class:`~streamkit.bench.load.Job` into one streamed
request through a :class:`~streamkit.client.Client` and records what
happened in a :class:`~streamkit.bench.metrics.RequestRecord`. The stamps
come from the stream (``Chunk.received_ns`` and ``Result.timing`` are taken
on socket arrival, before JSON parsing), so the consumer loop here adds no
error to them.

:func:`emulator_process` runs the built-in emulator in a child process, so
that a benchmark of it (or a calibration against it) measures the client,
not a server sharing the client's interpreter lock.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import random
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import IO, Any, Dict, Iterator, Mapping, Optional, Tuple, Union

from ..config import RetryPolicy, Timeouts
from ..errors import ResponseError, StreamkitError
from ..records import TIMING_STAMPS, ChatRequest, Chunk, GenerateRequest, Request, Result
from .load import Job, SendFn
from .metrics import RequestRecord

__all__ = [
    "EMULATOR_START_TIMEOUT_S",
    "PromptSpec",
    "Sender",
    "SenderArgs",
    "emulator_process",
    "generated_prompt",
    "make_sender",
]

EMULATOR_START_TIMEOUT_S = 60.0
# How long to wait for a stream's final record after its chunks ended; the
# stream's own timeouts bound the chunks themselves.
RESULT_TIMEOUT_S = 30.0
# The request number of the priming request: far from any measured or warm-up one,
# so its prompt is its own (no prompt cache shared with a measured request).
PRIME_INDEX = -2_000_000
_WORDS = ("the", "river", "stone", "light", "quiet", "north", "answer", "paper", "garden",
          "winter", "signal", "orbit", "copper", "window", "market", "letter", "engine",
          "forest", "silver", "harbor", "thread", "candle", "mirror", "valley", "number")


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: ``prompt`` text (generate) or ``messages`` (chat), plus per-line extras."""

    prompt: Optional[str] = None
    messages: Optional[Tuple[Mapping[str, Any], ...]] = None
    system: Optional[str] = None
    options: Optional[Mapping[str, Any]] = None


@dataclass(frozen=True)
class SenderArgs:
    """Everything a (possibly separate) process needs to build a Sender. Picklable."""

    host: str
    model: str
    dialect: str = "ollama"
    prompts: Tuple[PromptSpec, ...] = ()
    prompt_words: int = 32
    options: Mapping[str, Any] = field(default_factory=dict)
    think: Optional[Union[bool, str]] = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    pool_size: int = 10
    seed: int = 0


def generated_prompt(index: int, words: int, seed: int = 0) -> str:
    """A deterministic prompt of ``words`` words, different for every index.

    Each prompt starts with its own words so a server's prompt cache cannot
    skip the prompt evaluation of later requests.
    """
    rng = random.Random(seed * 1_000_003 + index)
    body = " ".join(rng.choice(_WORDS) for _ in range(max(0, words - 1)))
    return f"Request {index}: {body}".strip()


class Sender:
    """Sends bench requests through one Client; thread-safe; a context manager.

    ``send(job)`` blocks until the request has finished (bounded by the
    timeouts) and never raises for a failed request: the failure is recorded.
    ``cancel_all()`` cancels the streams in flight (Ctrl-C).
    """

    def __init__(self, args: SenderArgs) -> None:
        from ..client import Client

        self.args = args
        # One attempt: a retried request would hide the very 503s and errors
        # the bench must count.
        self.client = Client(args.host, dialect=args.dialect, timeouts=args.timeouts,
                             retry=RetryPolicy(attempts=1), pool_size=max(1, args.pool_size))
        self._live: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def request(self, index: int) -> Request:
        """The request for job ``index`` (prompts are used round-robin)."""
        a = self.args
        options: Dict[str, Any] = dict(a.options)
        if a.prompts:
            spec = a.prompts[index % len(a.prompts)]
            options.update(spec.options or {})
        else:
            spec = PromptSpec(prompt=generated_prompt(index, a.prompt_words, a.seed))
        opts = options or None
        rid = f"bench-{index}"
        if spec.messages is not None:
            messages = list(spec.messages)
            if spec.system:
                messages.insert(0, {"role": "system", "content": spec.system})
            return ChatRequest(a.model, messages, options=opts, think=a.think, id=rid)
        return GenerateRequest(a.model, spec.prompt or "", system=spec.system, options=opts,
                               think=a.think, id=rid)

    def prime(self) -> None:
        """Send one one-token request through this client before any measured one,
        and discard it. Blocks for one short request; never raises.

        A client's first request pays one-time costs that are the client's, not
        the server's: reading the proxy environment and preparing the URL,
        opening a connection, first use of code paths. Measured without this,
        the first requests of a point (under load, every stream's first one, as
        they race to do that work together) carry several ms of client time in
        their TTFT.
        """
        request = self.request(PRIME_INDEX)
        options = dict(request.options or {})
        options["num_predict"] = 1
        try:
            with self.client.stream(replace(request, options=options)) as stream:
                for _ in stream:
                    pass
        except StreamkitError:
            pass  # a server that fails here fails the measured requests too, and says why

    def send(self, job: Job) -> RequestRecord:
        record = RequestRecord(index=job.index, scheduled_ns=job.scheduled_ns,
                               dispatched_ns=job.dispatched_ns, picked_ns=job.picked_ns,
                               warmup=job.warmup)
        try:
            stream = self.client.stream(self.request(job.index))
        except StreamkitError as exc:
            _record_error(record, exc)
            return record
        with self._lock:
            self._live[job.index] = stream
            if self._cancelled:
                stream.cancel()
        try:
            self._consume(stream, record)
        finally:
            with self._lock:
                self._live.pop(job.index, None)
        return record

    def _consume(self, stream: Any, record: RequestRecord) -> None:
        with stream:
            try:
                for chunk in stream:
                    self._on_chunk(chunk, record)
            except StreamkitError:
                pass  # the Result below carries the error
            result: Result = stream.result(timeout=RESULT_TIMEOUT_S)
        _fill(record, result)

    def _on_chunk(self, chunk: Chunk, record: RequestRecord) -> None:
        record.chunks += 1
        if not (chunk.text or chunk.thinking or chunk.tool_calls):
            return
        stamps = record.chunk_ns
        if stamps and stamps[-1] == chunk.received_ns:
            record.coalesced += 1  # arrived in the same socket read as the previous chunk
        stamps.append(chunk.received_ns)
        sent = chunk.raw.get("_sent_ns") if chunk.raw is not None else None
        if isinstance(sent, int):
            record.lags_ns.append(chunk.received_ns - sent)

    def cancel_all(self) -> None:
        """Cancel every stream in flight and any started later. Idempotent."""
        with self._lock:
            self._cancelled = True
            live = list(self._live.values())
        for stream in live:
            stream.cancel()

    def close(self) -> None:
        self.cancel_all()
        self.client.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _record_error(record: RequestRecord, exc: BaseException) -> None:
    record.error_type = type(exc).__name__
    record.error = str(exc)[:500]
    if isinstance(exc, ResponseError):
        record.status_code = exc.status_code


def _fill(record: RequestRecord, result: Result) -> None:
    """Copy the stream's Timing and the server's Stats into the record."""
    t, s = result.timing, result.stats
    for name in TIMING_STAMPS:  # not chunks: the record counted the ones it saw
        setattr(record, name, getattr(t, name))
    if record.first_token_ns is None and record.chunk_ns:
        record.first_token_ns = record.chunk_ns[0]
    if record.last_token_ns is None and record.chunk_ns:
        record.last_token_ns = record.chunk_ns[-1]
    record.eval_count, record.eval_duration = s.eval_count, s.eval_duration
    record.prompt_eval_count = s.prompt_eval_count
    record.prompt_eval_duration = s.prompt_eval_duration
    record.load_duration, record.total_duration = s.load_duration, s.total_duration
    record.done_reason, record.attempts = result.done_reason, result.attempts
    if result.error is not None:
        _record_error(record, result.error)


def make_sender(args: SenderArgs) -> Tuple[SendFn, Any]:
    """A primed sender's send and close functions (the factory a shard process calls)."""
    sender = Sender(args)
    sender.prime()
    return sender.send, sender.close


# --- the built-in emulator in a child process -----------------------------------

# The child is a fresh interpreter started with -c (not multiprocessing), so a
# caller's script is never re-imported. It reads sys.path and the pickled
# EmulatorConfig from stdin, prints the URL, and serves until stdin closes.
_CHILD_CODE = ("import pickle, sys; sys.path[:0] = pickle.load(sys.stdin.buffer); "
               "from streamkit.bench.target import _emulator_child; _emulator_child()")


def _emulator_child() -> None:
    """Entry point of the emulator child process (see _CHILD_CODE)."""
    import pickle
    import sys

    from ..emulator import Emulator

    config = pickle.load(sys.stdin.buffer)
    with Emulator(config) as emulator:
        sys.stdout.write(f"{emulator.url}\n")
        sys.stdout.flush()
        sys.stdin.buffer.read()  # EOF: the parent is done (or gone)


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, waiting at most ``timeout`` (a helper thread does the read)."""
    box: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: box.put(stream.readline()),
                              name="streamkit-bench-emulator-url", daemon=True)
    reader.start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        return b""


@contextlib.contextmanager
def emulator_process(config: Any, *, in_process: bool = False) -> Iterator[str]:
    """Run an Emulator(config) and yield its base URL; stop it on exit.

    By default it runs in a child interpreter (``python -c``), as a real
    server would, so it does not compete with the client for the GIL.
    ``in_process=True`` runs it on a thread here instead.

    Raises:
        StreamkitError: the emulator did not start within
            EMULATOR_START_TIMEOUT_S (its stderr is in the message).
    """
    if in_process:
        from ..emulator import Emulator

        with Emulator(config) as emulator:
            yield str(emulator.url)
        return
    proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(pickle.dumps([p for p in sys.path if p]))
        proc.stdin.write(pickle.dumps(config))
        proc.stdin.flush()
        url = _read_line(proc.stdout, EMULATOR_START_TIMEOUT_S).decode().strip()
        if not url.startswith("http"):
            proc.kill()
            detail = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise StreamkitError("the built-in emulator failed to start: "
                                 + (detail[-1] if detail else "no output"))
        yield url
    finally:
        _stop_child(proc)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        proc.wait(10.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def host_label(host: str) -> str:
    """The host without user info (never print credentials)."""
    scheme, sep, rest = host.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"

