"""Plain records that cross module boundaries: requests, chunks, results.

This module sits below everything else (wire decoders, stream, dispatcher,
batch, bench) and imports nothing from streamkit but the error tree, so any
layer can use these types without an import cycle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple, Union

__all__ = [
    "END",
    "ChatRequest",
    "Chunk",
    "EmbedRequest",
    "EmbedResult",
    "GenerateRequest",
    "Request",
    "ResponseCache",
    "Result",
    "Stats",
    "TIMING_STAMPS",
    "Timing",
]

Message = Mapping[str, Any]


class Chunk(NamedTuple):
    """One decoded record of a stream.

    A NamedTuple because one is built per wire record (up to ~100k a second):
    creation must be cheap.

    ``text`` is generated content, ``thinking`` reasoning text, ``tool_calls``
    the tool calls this record carries. ``index`` counts chunks from 0 within
    the stream. ``received_ns`` is ``time.perf_counter_ns()`` stamped when the
    bytes holding this record came off the socket, before JSON parsing.
    ``raw`` is the decoded JSON object. ``done`` marks the final record
    (Ollama's ``done: true``; OpenAI's ``[DONE]``); it may still carry text.
    """

    text: str
    thinking: str = ""
    tool_calls: Tuple[Mapping[str, Any], ...] = ()
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index: the public field name
    received_ns: int = 0
    raw: Optional[Mapping[str, Any]] = None
    done: bool = False


class _EndMarker:
    """The sentinel ``Stream.pipe`` puts after the last chunk."""

    _instance: Optional[_EndMarker] = None

    def __new__(cls) -> _EndMarker:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "streamkit.END"

    def __reduce__(self) -> str:
        return "END"


END = _EndMarker()


@dataclass(frozen=True)
class Stats:
    """What the server reported about the request (all durations in ns).

    Ollama's final-chunk metrics, or for the OpenAI dialect the ``usage``
    record mapped onto the same names (``prompt_tokens`` → prompt_eval_count,
    ``completion_tokens`` → eval_count; durations are then None). A metric the
    server left out is None.
    """

    total_duration: Optional[int] = None
    load_duration: Optional[int] = None
    prompt_eval_count: Optional[int] = None
    prompt_eval_duration: Optional[int] = None
    eval_count: Optional[int] = None
    eval_duration: Optional[int] = None

    def as_dict(self) -> Dict[str, int]:
        """The metrics that are present, by their Ollama names."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Timing:
    """Client-side timestamps of one stream, ``time.perf_counter_ns()`` values.

    Each is stamped before JSON parsing of the record it belongs to, and is
    None when the stream never got that far. ``chunks`` counts decoded chunks.
    ``sent_ns`` is taken just before the request of the successful attempt
    is written; ``started_ns`` before the first attempt (so retries show as
    the difference).
    """

    started_ns: Optional[int] = None
    sent_ns: Optional[int] = None
    headers_ns: Optional[int] = None
    first_byte_ns: Optional[int] = None
    first_token_ns: Optional[int] = None
    first_content_ns: Optional[int] = None
    last_token_ns: Optional[int] = None
    done_ns: Optional[int] = None
    chunks: int = 0

    def as_dict(self) -> Dict[str, Optional[int]]:
        return dataclasses.asdict(self)


#: The names of Timing's stamps (every field but ``chunks``), in stream order.
TIMING_STAMPS: Tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Timing) if f.name.endswith("_ns"))


@dataclass
class Result:
    """The outcome of one stream: what was said, by whom, how fast, or why it failed.

    ``error`` is None on success; otherwise the typed error, and ``text`` is
    the partial text. ``attempts`` counts HTTP attempts (1 = no retry),
    restarts included; ``hosts_tried`` names the host of each attempt, in
    order (its last is ``host``); ``restarts`` counts the times the stream
    was cut mid-reply and sent again from scratch (``RetryPolicy.on_interrupt``).
    ``cached`` is True when the result came from a response cache.
    """

    id: Optional[str]
    model: str
    host: str
    text: str = ""
    thinking: str = ""
    tool_calls: List[Mapping[str, Any]] = field(default_factory=list)
    done_reason: Optional[str] = None
    stats: Stats = field(default_factory=Stats)
    timing: Timing = field(default_factory=Timing)
    attempts: int = 0
    error: Optional[BaseException] = None
    cached: bool = False
    hosts_tried: Tuple[str, ...] = ()
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ChatRequest:
    """A request for ``/api/chat`` (or ``/v1/chat/completions``)."""

    model: str
    messages: Sequence[Message]
    options: Optional[Mapping[str, Any]] = None
    format: Optional[Union[str, Mapping[str, Any]]] = None
    think: Optional[Union[bool, str]] = None
    tools: Optional[Sequence[Mapping[str, Any]]] = None
    keep_alive: Optional[Union[str, float]] = None
    id: Optional[str] = None


@dataclass(frozen=True)
class GenerateRequest:
    """A request for ``/api/generate`` (or ``/v1/completions``)."""

    model: str
    prompt: str
    system: Optional[str] = None
    options: Optional[Mapping[str, Any]] = None
    format: Optional[Union[str, Mapping[str, Any]]] = None
    think: Optional[Union[bool, str]] = None
    raw: Optional[bool] = None
    images: Optional[Sequence[str]] = None
    keep_alive: Optional[Union[str, float]] = None
    suffix: Optional[str] = None
    id: Optional[str] = None


Request = Union[ChatRequest, GenerateRequest]


class ResponseCache(Protocol):
    """What Client and Dispatcher need of a response cache (see streamkit.batch.cache).

    Both methods must be safe to call from many threads at once.
    """

    def get(self, request: Request) -> Optional[Result]:
        """The cached successful Result for this request, or None."""

    def put(self, request: Request, result: Result) -> None:
        """Store a successful Result."""


# -- embeddings ---------------------------------------------------------------


@dataclass(frozen=True)
class EmbedRequest:
    """A request for ``/api/embed`` (or ``/v1/embeddings``): one input or a group.

    ``input`` is a string or a sequence of strings; ``truncate`` None leaves
    the server's default (Ollama: truncate to the context), ``dimensions``
    asks for shorter vectors. ``options`` and ``keep_alive`` as for chat
    (the openai dialect sends only ``model``, ``input`` and ``dimensions``).
    """

    model: str
    input: Union[str, Sequence[str]]
    truncate: Optional[bool] = None
    dimensions: Optional[int] = None
    keep_alive: Optional[Union[str, float]] = None
    options: Optional[Mapping[str, Any]] = None
    id: Optional[str] = None

    @property
    def inputs(self) -> List[str]:
        """``input`` as a list (a single string is one input)."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


@dataclass
class EmbedResult:
    """The outcome of one embed request: one vector per input, or why it failed.

    ``vectors`` holds one list of floats per input, in input order (empty
    on failure). ``prompt_eval_count`` and the durations (ns) are the
    server's (the openai dialect reports only the token count).
    ``attempts`` counts HTTP attempts (1 = no retry); ``error`` is None on
    success, otherwise the typed error.
    """

    id: Optional[str]
    model: str
    host: str
    vectors: List[List[float]] = field(default_factory=list)
    prompt_eval_count: Optional[int] = None
    total_duration: Optional[int] = None
    load_duration: Optional[int] = None
    timing: Timing = field(default_factory=Timing)
    attempts: int = 0
    error: Optional[BaseException] = None
    _arrays: Dict[str, Any] = field(default_factory=dict, init=False, repr=False,
                                    compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def array(self, dtype: str = "float32") -> Any:
        """The vectors as a ``(inputs, dimensions)`` numpy array (numpy must be installed).

        Built once per dtype straight from the parsed lists into one
        contiguous array (one copy, no intermediate), then cached: later
        calls return the same array. Raises ImportError without numpy and
        ValueError if the vectors have different lengths.
        """
        cached = self._arrays.get(dtype)
        if cached is None:
            import numpy

            cached = self._arrays[dtype] = numpy.array(self.vectors, dtype=dtype)
        return cached
