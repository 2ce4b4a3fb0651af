"""The one error tree of streamkit.

Every error streamkit raises derives from :class:`StreamkitError`. Foreign
errors (requests, urllib3, socket, json) are translated at one boundary per
layer and chained with ``raise ... from exc``, so ``__cause__`` keeps them.

::

    StreamkitError
    ├── ConfigError(ValueError)        bad argument, host, option or prompt file
    ├── ConnectError                   server not reachable (refused, DNS, TLS); retried
    ├── ResponseError                  error status before streaming (.status_code, .body)
    │   ├── ModelNotFound              404 model not found; says `ollama pull NAME`
    │   └── ServerBusy                 429 / 503 (.retry_after); retried
    ├── StreamError                    after the stream started (.partial = text so far)
    │   ├── StreamInterrupted          connection cut, or body ended without done / [DONE]
    │   │   └── StreamDiverged         a replay produced other text than was delivered
    │   ├── ServerStreamError          in-band {"error": ...} line
    │   └── ProtocolError              malformed JSON, line over the size cap, bad framing,
    │       │                          a compressed reply we did not ask for
    │       └── ResponseTooLarge       a non-streaming reply over its size cap (.limit)
    ├── StreamTimeout(TimeoutError)    .phase in connect | first_token | idle | total
    └── Cancelled                      the caller cancelled

Messages say what to do next. ``.partial`` is also set on ``StreamTimeout``
and ``Cancelled`` (the text delivered before the stream stopped).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Cancelled",
    "ConfigError",
    "ConnectError",
    "ModelNotFound",
    "ProtocolError",
    "ResponseError",
    "ResponseTooLarge",
    "ServerBusy",
    "ServerStreamError",
    "StreamDiverged",
    "StreamError",
    "StreamInterrupted",
    "StreamTimeout",
    "StreamkitError",
]


class StreamkitError(Exception):
    """Base class of every error streamkit raises."""


class ConfigError(StreamkitError, ValueError):
    """A bad argument, host, option or prompt-file line.

    ``path`` and ``line`` name the place in a file when there is one; the
    message already includes them.
    """

    def __init__(self, message: str, *, path: Optional[str] = None,
                 line: Optional[int] = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class ConnectError(StreamkitError):
    """The server could not be reached (refused, DNS, TLS, reset before a status)."""


class ResponseError(StreamkitError):
    """The server answered with an error status before any streaming began."""

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ModelNotFound(ResponseError):
    """404 for a model the server does not have."""

    def __init__(self, message: str, *, model: str, status_code: int = 404,
                 body: str = "") -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.model = model


class ServerBusy(ResponseError):
    """429 or 503: the server is overloaded. ``retry_after`` is in seconds, or None."""

    def __init__(self, message: str, *, status_code: int, body: str = "",
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.retry_after = retry_after


class StreamError(StreamkitError):
    """The stream failed after it started. ``partial`` holds the text delivered so far."""

    def __init__(self, message: str, *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class StreamInterrupted(StreamError):
    """The connection was cut, or the body ended without its end marker."""


class StreamDiverged(StreamInterrupted):
    """A replay after an interruption produced text that differs from what was delivered.

    ``delivered`` is the text the consumer already has; ``replayed`` is the
    replay's text up to the point where the difference showed.
    """

    def __init__(self, message: str, *, delivered: str, replayed: str) -> None:
        super().__init__(message, partial=delivered)
        self.delivered = delivered
        self.replayed = replayed


class ServerStreamError(StreamError):
    """The server sent an in-band ``{"error": ...}`` record mid-stream."""


class ProtocolError(StreamError):
    """Malformed JSON, a line over the size cap, or bad framing."""


class ResponseTooLarge(ProtocolError):
    """A non-streaming reply (an info endpoint, an embedding) is over its size cap.

    ``limit`` is the cap in bytes. Nothing past the cap is read or kept.
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class StreamTimeout(StreamkitError, TimeoutError):
    """A timeout fired. ``phase`` is one of connect, first_token, idle, total."""

    def __init__(self, message: str, *, phase: str, partial: str = "") -> None:
        super().__init__(message)
        self.phase = phase
        self.partial = partial


class Cancelled(StreamkitError):
    """The caller cancelled the stream (``Stream.cancel()``, a closed dispatcher, Ctrl-C)."""

    def __init__(self, message: str = "the stream was cancelled", *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial
