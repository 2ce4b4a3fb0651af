"""Client and Conversation: the front door that builds Streams.

A :class:`Client` holds what every request to one server shares: the base
URL, the wire dialect, timeouts, retry policy, headers and the API key, and
one :class:`~streamkit.transport.Transport` (a connection pool). It validates
arguments, builds a request record, and hands it to a
:class:`~streamkit.stream.Stream`, which does the I/O on its own worker
thread. A Client is thread-safe: its settings never change after
construction and the transport is thread-safe.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _json
from .config import (
    RetryPolicy,
    Secret,
    Timeouts,
    api_key_from_env,
    check_count,
    dialect_base_url,
    parse_host,
)
from .errors import (
    ConfigError,
    ConnectError,
    ResponseError,
    ServerStreamError,
    StreamError,
    StreamTimeout,
)
from .records import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Request,
    ResponseCache,
    Result,
)
from .stream import FixedRoute, Route, Stream
from .transport import CancelToken, Transport
from .wire import Dialect, get_dialect
from .wire.lines import LineFramer

__all__ = ["Client", "Conversation"]

# Deadlines for a whole info exchange (connect, head, body), however slowly
# the bytes come; the bodies are capped by _http.INFO_BODY_LIMIT.
INFO_TIMEOUT_S = 30.0  # /api/tags, /api/version: small replies, but the server may be busy
PING_TIMEOUT_S = 5.0
DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()

Message = Mapping[str, Any]


def _check_model(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model must be a non-empty string, got {model!r}")
    return model


def _check_messages(messages: object) -> List[Dict[str, Any]]:
    if not isinstance(messages, (list, tuple)):
        raise ConfigError(f"messages must be a list of {{'role', 'content'}} dicts, "
                          f"got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConfigError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise ConfigError(f"messages[{i}] needs a 'role' string (system, user, "
                              f"assistant or tool)")
        if not isinstance(message.get("content"), str):
            raise ConfigError(f"messages[{i}] needs a 'content' string")
        checked.append(dict(message))
    return checked


def _check_optional(name: str, value: object, types: Any, what: str) -> None:
    if value is None:
        return
    # bool is an int: keep_alive=True must not pass as "1 second".
    sneaky_bool = isinstance(value, bool) and bool not in _as_tuple(types)
    if sneaky_bool or not isinstance(value, types):
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _as_tuple(types: Any) -> tuple[Any, ...]:
    return types if isinstance(types, tuple) else (types,)


def _check_common(options: object, format: object, think: object, keep_alive: object,
                  id: object) -> None:
    _check_optional("options", options, Mapping, "a dict of Ollama option names")
    _check_optional("format", format, (str, Mapping), "'json' or a JSON-Schema dict")
    _check_optional("think", think, (bool, str), "a bool or 'low'/'medium'/'high'")
    _check_optional("keep_alive", keep_alive, (str, int, float),
                    "a duration string like '5m' or seconds")
    _check_optional("id", id, str, "a string")


def _check_headers(headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("headers must be a dict of str to str")
    return dict(headers)


def _check_api_key(api_key: Union[str, Secret, None]) -> Optional[Secret]:
    if api_key is None:
        return api_key_from_env()
    if isinstance(api_key, Secret):
        return api_key if api_key.reveal() else None
    if not isinstance(api_key, str):
        raise ConfigError("api_key must be a string")  # never echo the value
    return Secret(api_key) if api_key else None


class Client:
    """Streams chat and generate requests from one server.

    Args:
        host: base URL; None reads ``OLLAMA_HOST`` (ollama-python's rules,
            default ``http://127.0.0.1:11434``). For ``dialect="openai"``,
            ``http://h:8080`` and ``http://h:8080/v1`` both work.
        dialect: ``"ollama"`` (``/api/*``) or ``"openai"`` (``/v1/*``).
        timeouts, retry: per-stream defaults (see :class:`Timeouts`, :class:`RetryPolicy`).
        headers: extra HTTP headers sent with every request.
        api_key: sent as ``Authorization: Bearer``; None reads ``OLLAMA_API_KEY``.
            Never shown in a repr, log line or error, and never sent to another
            host after a redirect.
        queue_size: chunks buffered per stream before the worker waits for the consumer.
        cache: an optional response cache (``streamkit.SQLiteCache``).
        pool_size: connections kept per host (match the number of concurrent streams).

    Raises:
        ConfigError: a bad argument (the message names it).
    """

    def __init__(self, host: Optional[str] = None, *, dialect: str = "ollama",
                 timeouts: Timeouts = DEFAULT_TIMEOUTS, retry: RetryPolicy = DEFAULT_RETRY,
                 headers: Optional[Mapping[str, str]] = None,
                 api_key: Union[str, Secret, None] = None, queue_size: int = 256,
                 cache: Optional[ResponseCache] = None, pool_size: int = 10) -> None:
        self._dialect: Dialect = get_dialect(dialect)
        self.host = dialect_base_url(parse_host(host), dialect)
        if not isinstance(timeouts, Timeouts):
            raise ConfigError("timeouts must be a streamkit.Timeouts")
        if not isinstance(retry, RetryPolicy):
            raise ConfigError("retry must be a streamkit.RetryPolicy")
        self.timeouts = timeouts
        self.retry = retry
        self.queue_size = check_count("queue_size", queue_size)
        self.cache = cache
        self.transport = Transport(pool_size=check_count("pool_size", pool_size),
                                   headers=_check_headers(headers),
                                   api_key=_check_api_key(api_key))
        self._lock = threading.Lock()
        self._closed = False

    @property
    def dialect(self) -> str:
        return self._dialect.name

    def __repr__(self) -> str:
        return f"Client(host={self.host!r}, dialect={self.dialect!r})"

    # -- streaming ------------------------------------------------------------

    def chat(self, model: str, messages: Sequence[Message], *,
             options: Optional[Mapping[str, Any]] = None,
             format: Optional[Union[str, Mapping[str, Any]]] = None,
             think: Optional[Union[bool, str]] = None,
             tools: Optional[Sequence[Mapping[str, Any]]] = None,
             keep_alive: Optional[Union[str, float]] = None,
             id: Optional[str] = None) -> Stream:
        """Start a chat stream (``/api/chat`` or ``/v1/chat/completions``); returns at once.

        Raises ConfigError for a bad argument; every other failure is
        delivered through the returned Stream.
        """
        _check_common(options, format, think, keep_alive, id)
        if tools is not None and not (isinstance(tools, (list, tuple)) and all(
                isinstance(t, Mapping) for t in tools)):
            raise ConfigError("tools must be a list of tool dicts")
        request = ChatRequest(_check_model(model), _check_messages(messages), options=options,
                              format=format, think=think, tools=tools, keep_alive=keep_alive,
                              id=id)
        return self.stream(request)

    def generate(self, model: str, prompt: str, *, system: Optional[str] = None,
                 options: Optional[Mapping[str, Any]] = None,
                 format: Optional[Union[str, Mapping[str, Any]]] = None,
                 think: Optional[Union[bool, str]] = None, raw: Optional[bool] = None,
                 images: Optional[Sequence[str]] = None,
                 keep_alive: Optional[Union[str, float]] = None,
                 suffix: Optional[str] = None, id: Optional[str] = None) -> Stream:
        """Start a generate stream (``/api/generate`` or ``/v1/completions``); returns at once.

        Raises ConfigError for a bad argument.
        """
        _check_common(options, format, think, keep_alive, id)
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        _check_optional("system", system, str, "a string")
        _check_optional("suffix", suffix, str, "a string")
        _check_optional("raw", raw, bool, "a bool")
        if images is not None and not (isinstance(images, (list, tuple)) and all(
                isinstance(i, str) for i in images)):
            raise ConfigError("images must be a list of base64 strings")
        request = GenerateRequest(_check_model(model), prompt, system=system, options=options,
                                  format=format, think=think, raw=raw, images=images,
                                  keep_alive=keep_alive, suffix=suffix, id=id)
        return self.stream(request)

    def stream(self, request: Request) -> Stream:
        """Start a stream for a ready-made ChatRequest or GenerateRequest."""
        stream = self._new_stream(request)
        stream._start()
        return stream

    def _new_stream(self, request: Request, route: Optional[Route] = None) -> Stream:
        """A Stream for ``request``, not started (the Dispatcher runs it on its pool)."""
        if not isinstance(request, (ChatRequest, GenerateRequest)):
            raise ConfigError(f"request must be a ChatRequest or GenerateRequest, "
                              f"got {type(request).__name__}")
        self._check_open()
        return Stream(request, dialect=self._dialect, transport=self.transport,
                      route=route if route is not None else FixedRoute(self.host),
                      timeouts=self.timeouts, retry=self.retry,
                      queue_size=self.queue_size, cache=self.cache)

    # -- embeddings -------------------------------------------------------------

    def embed(self, model: str, input: Union[str, Sequence[str]], *,
              truncate: Optional[bool] = None, dimensions: Optional[int] = None,
              keep_alive: Optional[Union[str, float]] = None,
              options: Optional[Mapping[str, Any]] = None,
              cancel: Optional[CancelToken] = None) -> EmbedResult:
        """Embed one input or a list of inputs in one request; blocks until the reply.

        ``POST /api/embed`` (``/v1/embeddings`` for the openai dialect). Returns
        an :class:`EmbedResult` with one vector per input (``.array()`` gives a
        numpy array). Timeouts and retries as for streams: ``connect``, then
        ``first_token`` for the whole reply, ``total`` for the call; 429/503
        (honouring ``Retry-After``), connect errors and cut replies are
        retried. ``cancel.cancel()`` from another thread ends the call at once
        (``streamkit.CancelToken``; one token per call).

        Raises:
            ConfigError: a bad argument, or one the dialect cannot send.
            ConnectError, StreamTimeout, ResponseError (ModelNotFound,
            ServerBusy), StreamInterrupted, ProtocolError, Cancelled: the
            request failed (after its retries).
        """
        from ._embed import embed_request
        request = embed_request(_check_model(model), input, truncate=truncate,
                                dimensions=dimensions, keep_alive=keep_alive, options=options)
        result = self._run_embed(request, token=cancel)
        if result.error is not None:
            raise result.error
        return result

    def _run_embed(self, request: EmbedRequest, route: Optional[Route] = None,
                   token: Optional[CancelToken] = None) -> EmbedResult:
        """Run ``request`` here; the result carries any error (the Dispatcher's entry)."""
        from ._embed import run_embed
        from .wire.embed import get_embed_codec
        self._check_open()
        return run_embed(request, codec=get_embed_codec(self.dialect), dialect=self._dialect,
                         transport=self.transport,
                         route=route if route is not None else FixedRoute(self.host),
                         timeouts=self.timeouts, retry=self.retry, token=token)

    # -- management endpoints -----------------------------------------------

    def models(self) -> List[Dict[str, Any]]:
        """The models the server has: ``/api/tags`` entries, or ``/v1/models`` ``data``.

        Raises ConnectError, StreamTimeout, ResponseError; ProtocolError (ResponseTooLarge)
        for a compressed or oversized reply.
        """
        if self.dialect == "openai":
            data = self._get_json("models")
            return list(data.get("data", [])) if isinstance(data, dict) else []
        data = self._get_json("api/tags")
        return list(data.get("models", [])) if isinstance(data, dict) else []

    def version(self) -> Optional[str]:
        """The server's version string (``/api/version``); None for the openai dialect,
        which has no version endpoint.

        Raises ConnectError, StreamTimeout, ResponseError, ProtocolError (as models()).
        """
        if self.dialect == "openai":
            return None
        data = self._get_json("api/version")
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def ping(self) -> bool:
        """True if the server answers; False if it is unreachable, slow or erroring.

        Never raises for an unreachable or misbehaving server; returns within
        about ``PING_TIMEOUT_S`` (5 s) however slowly the server answers.
        """
        path = "models" if self.dialect == "openai" else "api/version"
        timeout = min(self.timeouts.connect or PING_TIMEOUT_S, PING_TIMEOUT_S)
        try:
            status, _ = self.transport.request_json("GET", self._url(path), timeout=timeout)
        except (ConnectError, StreamTimeout, ResponseError, StreamError):
            return False
        return 200 <= status < 300

    def pull(self, model: str) -> Iterator[Dict[str, Any]]:
        """Download a model; yields Ollama's progress records as they arrive.

        Records look like ``{"status": "pulling 1a2b3c4d5e6f", "digest": ...,
        "total": N, "completed": M}``; the last one is ``{"status": "success"}``.
        Closing the iterator early closes the connection (Ollama keeps the
        partial download). Waits at most ``timeouts.idle`` between whole records.

        Raises:
            ConnectError, StreamTimeout, ResponseError: before the first record.
            ServerStreamError: the server reported an error mid-stream (e.g.
                ``pull model manifest: file does not exist``).
            StreamInterrupted: the connection was cut.
        """
        if self.dialect != "ollama":
            raise ConfigError("pull needs dialect='ollama' (OpenAI servers cannot pull models)")
        _check_model(model)
        self._check_open()
        return self._pull(model)

    def _pull(self, model: str) -> Iterator[Dict[str, Any]]:
        body = _json_bytes({"model": model, "stream": True})
        response = self.transport.open(self._url("api/pull"), body, timeouts=self.timeouts,
                                       cancel=CancelToken())
        try:
            if not 200 <= response.status < 300:
                raise self._dialect.error_for_status(response.status, response.read_body(),
                                                     response.headers, model)
            framer = LineFramer()
            idle = self.timeouts.idle
            # idle bounds the wait for the next whole record, not for the next
            # bytes: a server trickling a record that never ends still times out
            deadline = None if idle is None else time.monotonic() + idle
            while True:
                data = response.read_some(
                    None if deadline is None else deadline - time.monotonic())
                lines = framer.feed(data) if data else framer.flush()
                if lines and idle is not None:
                    deadline = time.monotonic() + idle
                for line in lines:
                    record = _decode_record(line)
                    if record.get("error"):
                        raise ServerStreamError(f"pulling {model!r} failed: {record['error']}")
                    yield record
                if not data:
                    return
        finally:
            response.close()

    def load(self, model: str, keep_alive: Union[str, float] = "5m") -> Result:
        """Load ``model`` into memory (the empty-prompt request) and keep it for ``keep_alive``.

        Blocks until the server has loaded it. Returns the Result
        (``done_reason == "load"`` on Ollama). Raises what a stream raises.
        """
        stream = self.generate(model, "", keep_alive=keep_alive)
        with stream:
            result = stream.result()
        if result.error is not None:
            raise result.error
        return result

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. Idempotent; running streams fail or finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Client is closed")

    def _url(self, path: str) -> str:
        return f"{self.host}/{path}"

    def _get_json(self, path: str) -> Any:
        self._check_open()
        status, data = self.transport.request_json("GET", self._url(path),
                                                   timeout=INFO_TIMEOUT_S)
        if not 200 <= status < 300:
            body = data.encode("utf-8") if isinstance(data, str) else (
                _json_bytes(data) if data is not None else b"")
            raise self._dialect.error_for_status(status, body, {}, "")
        return data


def _json_bytes(value: Any) -> bytes:
    import json
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _decode_record(line: bytes) -> Dict[str, Any]:
    from .errors import ProtocolError
    try:
        record = _json.loads(line)
    except _json.DECODE_ERRORS as exc:
        raise ProtocolError(f"undecodable progress record from the server: {exc}") from exc
    if not isinstance(record, dict):
        raise ProtocolError("a progress record from the server is not a JSON object")
    return record


class Conversation:
    """A chat that remembers: each :meth:`ask` sends the history plus a new user turn.

    The user turn and the assistant's reply join the history together once
    the reply has completed successfully; a failed or cancelled reply leaves
    the history as it was, so the question can simply be asked again.

    Turns are sequential: ``ask`` first waits for the previous reply to end
    (it need not have been read: waiting lifts its queue bound), so every
    question is sent with the answers before it. Thread-safe.
    """

    def __init__(self, client: Client, model: str, *, system: Optional[str] = None,
                 options: Optional[Mapping[str, Any]] = None) -> None:
        _check_optional("system", system, str, "a string")
        self.client = client
        self.model = _check_model(model)
        self.options = options
        self._system = system
        self._lock = threading.Lock()   # guards _history and _pending
        self._turn = threading.Lock()   # one ask at a time builds on the history
        self._history: List[Dict[str, Any]] = []
        self._pending: Optional[Tuple[Dict[str, Any], Stream]] = None

    @property
    def history(self) -> List[Dict[str, Any]]:
        """A copy of the completed turns (without the system prompt); never blocks
        on a reply still streaming (it is not part of the history yet)."""
        with self._lock:
            self._settle(wait=False)
            return [dict(m) for m in self._history]

    def reset(self) -> None:
        """Forget every turn (a reply still streaming will not be recorded)."""
        with self._lock:
            self._history.clear()
            self._pending = None

    def ask(self, text: str) -> Stream:
        """Send ``text`` as the next user turn; returns the reply's Stream (started).

        Blocks while the previous reply is still streaming. Raises
        ConfigError for a non-string ``text``.
        """
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string, got {type(text).__name__}")
        user = {"role": "user", "content": text}
        with self._turn:
            with self._lock:
                pending = self._pending
            if pending is not None:
                pending[1].result()  # the previous turn must end first (outside _lock)
            with self._lock:
                self._settle(wait=False)
                messages = list(self._history)
            if self._system is not None:
                messages.insert(0, {"role": "system", "content": self._system})
            messages.append(user)
            stream = self.client.chat(self.model, messages, options=self.options)
            with self._lock:
                self._pending = (user, stream)
        return stream

    def _settle(self, *, wait: bool) -> None:
        """Move a finished pending turn into the history (call with _lock held)."""
        if self._pending is None:
            return
        user, stream = self._pending
        try:
            result = stream.result(timeout=None if wait else 0)
        except TimeoutError:
            return
        self._pending = None
        if result.error is not None:
            return
        reply: Dict[str, Any] = {"role": "assistant", "content": result.text}
        if result.tool_calls:
            reply["tool_calls"] = list(result.tool_calls)
        self._history.extend([user, reply])
