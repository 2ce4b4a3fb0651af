"""Client: the front door that builds Streams (:mod:`.conversation` keeps a chat's history).

A :class:`Client` holds what every request to one server shares: the base
URL, the wire dialect, timeouts, retry policy, headers and the API key, and
one :class:`~streamkit._http.Transport` (a connection pool). It validates
arguments, builds a request record, and hands it to a
:class:`~streamkit.stream.Stream`, which does the I/O on its own worker
thread. A Client is thread-safe: its settings never change after
construction and the transport is thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _args as args
from . import _pull
from ._http import CancelToken, Transport
from .config import (
    RetryPolicy,
    Secret,
    Timeouts,
    check_count,
    dialect_base_url,
    host_from_env,
    parse_host,
)
from .errors import (
    ConfigError,
    ConnectError,
    ResponseError,
    StreamError,
    StreamTimeout,
)
from .records import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Request,
    ResponseCache,
    Result,
)
from .stream import FixedRoute, Route, Stream
from .wire import Dialect, get_dialect

__all__ = ["Client"]

# Deadlines for a whole info exchange (connect, head, body), however slowly
# the bytes come; the bodies are capped by _http.INFO_BODY_LIMIT.
INFO_TIMEOUT_S = 30.0  # /api/tags, /api/version: small replies, but the server may be busy
PING_TIMEOUT_S = 5.0
DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()

Message = Mapping[str, Any]


class Client:
    """Streams chat and generate requests from one server.

    Args:
        host: base URL; None reads ``OLLAMA_HOST`` (ollama-python's rules,
            default ``http://127.0.0.1:11434``); for ``dialect="openai"``
            ``OPENAI_BASE_URL`` first, as the OpenAI SDK does. For
            ``dialect="openai"``, ``http://h:8080`` and ``http://h:8080/v1``
            both work. ``"builtin"`` is refused: that name means the
            in-process emulator on the command line; in Python use
            ``with sk.Emulator() as emu: sk.Client(emu.url)``.
        dialect: ``"ollama"`` (``/api/*``) or ``"openai"`` (``/v1/*``).
        timeouts, retry: per-stream defaults (see :class:`Timeouts`, :class:`RetryPolicy`).
        headers: extra HTTP headers sent with every request.
        api_key: sent as ``Authorization: Bearer``; None reads ``OLLAMA_API_KEY``
            (``OPENAI_API_KEY`` for ``dialect="openai"``). Never shown in a
            repr, log line or error, and never sent to another host after a
            redirect.
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
        if host == "builtin":  # refused before parse_host makes it a DNS name
            raise ConfigError(
                "Client('builtin'): 'builtin' is the command line's name for the in-process "
                "emulator; in Python start one with `with sk.Emulator() as emu:` and use "
                "sk.Client(emu.url)")
        if host is None:
            host = host_from_env(dialect)
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
                                   headers=args.check_headers(headers),
                                   api_key=args.check_api_key(api_key, dialect))
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

        Args:
            model: the model name, e.g. ``"llama3.2"``.
            messages: the conversation so far, oldest first: dicts with
                ``role`` (``"system"``, ``"user"``, ``"assistant"``,
                ``"tool"``) and ``content``; a message may carry
                ``images``, a list of base64 strings, e.g.
                ``{"role": "user", "content": "What is this?", "images":
                [base64.b64encode(open("cat.png", "rb").read()).decode()]}``
                (the openai dialect sends them as image content parts).
            options: model options by Ollama's names, e.g.
                ``{"temperature": 0, "num_predict": 64, "seed": 1}``; the
                openai dialect maps the ones it has (``num_predict`` →
                ``max_tokens``).
            format: ``"json"`` for any JSON object, or a JSON schema the
                answer must follow, e.g. ``{"type": "object", "properties":
                {"city": {"type": "string"}}, "required": ["city"]}``.
            think: ``True`` asks a thinking model to reason first (its
                reasoning arrives in ``Chunk.thinking``), ``False`` turns it
                off, or a level ``"low"``, ``"medium"``, ``"high"``.
            tools: tool definitions the model may call, e.g. ``[{"type":
                "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city":
                {"type": "string"}}}}}]``; calls arrive in ``Chunk.tool_calls``.
            keep_alive: how long the server keeps the model loaded
                afterwards: ``"10m"``, seconds (``300``), ``0`` to unload.
            id: your name for this request, echoed in ``Result.id``.

        Example::

            with client.chat("llama3.2", [{"role": "user", "content": "Hi"}],
                             options={"temperature": 0}) as stream:
                for chunk in stream:
                    print(chunk.text, end="")

        Raises ConfigError for a bad argument; every other failure is
        delivered through the returned Stream.
        """
        args.check_common(options, format, think, keep_alive, id)
        if tools is not None and not (isinstance(tools, (list, tuple)) and all(
                isinstance(t, Mapping) for t in tools)):
            raise ConfigError("tools must be a list of tool dicts")
        request = ChatRequest(args.check_model(model), args.check_messages(messages),
                              options=options, format=format, think=think, tools=tools,
                              keep_alive=keep_alive, id=id)
        return self.stream(request)

    def generate(self, model: str, prompt: str, *, system: Optional[str] = None,
                 options: Optional[Mapping[str, Any]] = None,
                 format: Optional[Union[str, Mapping[str, Any]]] = None,
                 think: Optional[Union[bool, str]] = None, raw: Optional[bool] = None,
                 images: Optional[Sequence[str]] = None,
                 keep_alive: Optional[Union[str, float]] = None,
                 suffix: Optional[str] = None, id: Optional[str] = None) -> Stream:
        """Start a generate stream (``/api/generate`` or ``/v1/completions``); returns at once.

        Args:
            model: the model name, e.g. ``"llama3.2"``.
            prompt: the text to complete; ``""`` only loads the model.
            system: a system prompt (Ollama dialect only).
            options: model options by Ollama's names, e.g.
                ``{"temperature": 0, "num_predict": 64, "stop": ["\\n"]}``.
            format: ``"json"`` or a JSON schema dict the answer must follow.
            think: ``True``/``False`` or ``"low"``/``"medium"``/``"high"``
                (reasoning arrives in ``Chunk.thinking``).
            raw: ``True`` sends ``prompt`` without the model's template.
            images: base64 strings for a multimodal model, e.g.
                ``[base64.b64encode(open("cat.png", "rb").read()).decode()]``
                (Ollama dialect only).
            keep_alive: how long the model stays loaded: ``"10m"``, seconds, ``0``.
            suffix: text after the gap, for fill-in-the-middle models.
            id: your name for this request, echoed in ``Result.id``.

        Example::

            text = client.generate("llama3.2", "One word for blue:",
                                   options={"num_predict": 8}).text()

        Raises ConfigError for a bad argument (and, for the openai dialect,
        for ``system`` or ``images``); every other failure is delivered
        through the returned Stream.
        """
        args.check_common(options, format, think, keep_alive, id)
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        args.check_optional("system", system, str, "a string")
        args.check_optional("suffix", suffix, str, "a string")
        args.check_optional("raw", raw, bool, "a bool")
        args.check_images("images", images)
        request = GenerateRequest(args.check_model(model), prompt, system=system, options=options,
                                  format=format, think=think, raw=raw, images=images,
                                  keep_alive=keep_alive, suffix=suffix, id=id)
        return self.stream(request)

    def stream(self, request: Request) -> Stream:
        """Start a stream for a ready-made ChatRequest or GenerateRequest."""
        stream = self._new_stream(request)
        stream._start()
        return stream

    def run(self, request: Request, on_chunk: Callable[[Chunk], None]) -> Result:
        """Stream ``request`` in the calling thread: each chunk goes to
        ``on_chunk`` as it arrives; returns the Result (see :meth:`Stream.run`).

        No worker thread: for many streams on threads of your own, e.g.
        ``client.run(GenerateRequest("llama3.2", p), lambda c: print(c.text))``.
        To cancel it from another thread, use :meth:`prepare`.
        """
        return self.prepare(request).run(on_chunk)

    def prepare(self, request: Request) -> Stream:
        """A Stream for ``request``, not started: ``stream.run(on_chunk)`` runs
        it in the calling thread (as :meth:`run` does), and ``stream.cancel()``
        from any other thread ends it at once, the connection closed so the
        server stops. Never blocks."""
        return self._new_stream(request)

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
        request = embed_request(args.check_model(model), input, truncate=truncate,
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
        args.check_model(model)
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
            yield from _pull.progress(response, model, self.timeouts.idle)
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

