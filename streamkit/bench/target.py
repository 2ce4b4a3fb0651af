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
import multiprocessing
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..config import RetryPolicy, Timeouts
from ..errors import ConfigError, ResponseError, StreamkitError
from ..records import ChatRequest, Chunk, GenerateRequest, Request, Result
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
    "read_prompt_file",
]

EMULATOR_START_TIMEOUT_S = 60.0
# How long to wait for a stream's final record after its chunks ended; the
# stream's own timeouts bound the chunks themselves.
RESULT_TIMEOUT_S = 30.0
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


def read_prompt_file(path: str, model: str) -> Tuple[PromptSpec, ...]:
    """The prompts of a batch-format file (.jsonl, .txt, .csv).

    Raises:
        ConfigError: the file cannot be read, has a bad line (with its line
            number), or holds no prompt.
    """
    from .._batchinput import Problem, detect_format, read_prompts

    specs: List[PromptSpec] = []
    problems: List[str] = []
    for item in read_prompts(path, detect_format(path), default_model=model):
        if isinstance(item, Problem):
            problems.append(str(item))
            continue
        messages = tuple(item.messages) if item.messages is not None else None
        specs.append(PromptSpec(prompt=item.prompt, messages=messages,
                                system=item.system, options=item.options))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError("bad prompt file: " + "; ".join(problems[:3]) + more)
    if not specs:
        raise ConfigError(f"prompt file {path!r} holds no prompt")
    return tuple(specs)


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
    record.started_ns, record.sent_ns = t.started_ns, t.sent_ns
    record.headers_ns, record.first_byte_ns = t.headers_ns, t.first_byte_ns
    record.first_token_ns = t.first_token_ns
    record.first_content_ns = t.first_content_ns
    record.last_token_ns = t.last_token_ns
    record.done_ns = t.done_ns
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
    """A send function and its close function (the factory a shard process calls)."""
    sender = Sender(args)
    return sender.send, sender.close


# --- the built-in emulator in a child process -----------------------------------


def _emulator_main(config: Any, conn: Any) -> None:
    from ..emulator import Emulator

    try:
        with Emulator(config) as emulator:
            conn.send(("url", emulator.url))
            with contextlib.suppress(EOFError):
                conn.recv()  # parent says stop, or went away
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@contextlib.contextmanager
def emulator_process(config: Any, *, in_process: bool = False) -> Iterator[str]:
    """Run an Emulator(config) and yield its base URL; stop it on exit.

    By default it runs in a spawned child process (a separate interpreter,
    as a real server would be). ``in_process=True`` runs it on a thread here.

    Raises:
        StreamkitError: the emulator did not start within
            EMULATOR_START_TIMEOUT_S (or reported an error).
    """
    if in_process:
        from ..emulator import Emulator

        with Emulator(config) as emulator:
            yield str(emulator.url)
        return
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_emulator_main, args=(config, child),
                       name="streamkit-bench-emulator", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(EMULATOR_START_TIMEOUT_S):
            raise StreamkitError("the built-in emulator did not start in time")
        kind, payload = parent.recv()
        if kind != "url":
            raise StreamkitError(f"the built-in emulator failed to start: {payload}")
        yield str(payload)
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        proc.join(10.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        parent.close()
        proc.close()


def host_label(host: str) -> str:
    """The host without user info (never print credentials)."""
    scheme, sep, rest = host.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"

