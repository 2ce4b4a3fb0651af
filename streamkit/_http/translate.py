"""Error translation: what requests, urllib3 and sockets raise, as streamkit errors.

Every exception of the HTTP stack is translated here, once, by phase
(requests reports a read timeout mid-body as ``ConnectionError``, so the
type alone says little). The transport calls :func:`open_error`, the
response :func:`read_error`; nothing else in the package catches them.

============================  ==============================================
open(): refused, DNS, TLS,    ConnectError
reset before the status
open(): connect timeout       StreamTimeout(phase="connect")
open(): no status in time     StreamTimeout(phase="first_token")
open(): a malformed URL       ConfigError
read_some(): no bytes in time StreamTimeout(phase=<the caller's phase>)
read_some(): cut, reset,      StreamInterrupted
truncated chunked body
bad chunked framing           ProtocolError (raised by the decoder)
any phase after cancel()      Cancelled
============================  ==============================================
"""

from __future__ import annotations

import errno
import socket
import traceback
from typing import Iterator, List, Optional, Set

import requests

from ..errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from .cancel import CancelToken

__all__ = ["connect_failed", "connect_timed_out", "forget_frames", "no_reply_in_time",
           "open_error", "read_error", "timeout_error"]


def forget_frames(exc: BaseException) -> None:
    """Cut what the exceptions chained under ``exc`` hold of the HTTP machinery.

    The translated error keeps ``exc`` as its cause, and a Result keeps the
    error for as long as the caller likes (a batch run keeps thousands).
    Left alone, that chain pins sockets: the finished frames of
    requests/urllib3 (their locals), and the objects urllib3 and requests
    attach to their errors (``MaxRetryError.pool`` is a whole connection
    pool with its idle sockets; ``NewConnectionError.conn``, a
    ``RequestException.response``). Frames are cleared and those
    attributes set to None; messages, types and the chain itself stay.
    """
    for current in _chain(exc):
        traceback.clear_frames(current.__traceback__)
        attrs = getattr(current, "__dict__", None)
        if attrs and type(current).__module__.startswith(_HTTP_PACKAGES):
            for name in _PINNING_ATTRS:
                if attrs.get(name) is not None:
                    attrs[name] = None  # via __dict__: a deprecated property may warn


_PINNING_ATTRS = ("pool", "conn", "_pool", "response", "_response")
"""Attributes of urllib3/requests errors that hold pools, connections or responses."""

_HTTP_PACKAGES = ("requests.", "urllib3.")
"""Only their errors are scrubbed: other exceptions in a chain are not ours to edit."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception under it: causes, contexts, ``.reason``, ``args``."""
    seen: Set[int] = set()
    todo: List[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *getattr(current, "args", ())]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def open_error(exc: requests.RequestException, url: str,
               cancel: Optional[CancelToken]) -> StreamkitError:
    """Translate a requests error raised before the body started."""
    forget_frames(exc)
    if cancel is not None and cancel.cancelled:
        return Cancelled()
    if isinstance(exc, requests.ConnectTimeout):
        return connect_timed_out(url)
    if isinstance(exc, requests.ReadTimeout):
        return no_reply_in_time(url)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return ConfigError(f"bad URL {url!r}: {_reason(exc)}")
    return connect_failed(url, exc)


def connect_timed_out(url: str) -> StreamTimeout:
    """No connection to ``url`` within the connect timeout."""
    return StreamTimeout(f"could not connect to {_origin(url)} in time (connect "
                         "timeout); check the host, or raise Timeouts.connect",
                         phase="connect")


def no_reply_in_time(url: str) -> StreamTimeout:
    """The reply head did not come within the first_token timeout."""
    return StreamTimeout(f"{_origin(url)} accepted the request but sent no reply in "
                         "time (first_token timeout); a cold model load can take "
                         "minutes: raise Timeouts.first_token", phase="first_token")


def connect_failed(url: str, exc: BaseException) -> ConnectError:
    """Refused, DNS, reset or closed before the reply's head (``exc`` says which)."""
    forget_frames(exc)
    if any(isinstance(e, OSError) and e.errno in _FD_EXHAUSTED for e in _chain(exc)):
        return ConnectError(f"too many open files: lower workers or raise ulimit -n (no "
                            f"socket could be opened for {_origin(url)}: {_reason(exc)})")
    return ConnectError(f"could not connect to {_origin(url)} ({_reason(exc)}); is the "
                        "server running (`ollama serve`) and the host right?")


_FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE)


def read_error(exc: Exception, cancel: CancelToken, phase: str) -> StreamkitError:
    """Translate an error of a body read (``OSError``, or ``ValueError`` for a
    read on a closed file)."""
    forget_frames(exc)
    if cancel.cancelled:
        return Cancelled()
    if isinstance(exc, socket.timeout):
        return timeout_error(phase)
    return StreamInterrupted(f"the connection broke mid-stream ({_reason(exc)}); the reply "
                             "is incomplete")


def timeout_error(phase: str) -> StreamTimeout:
    """No body bytes within the caller's budget for ``phase``."""
    what = {"first_token": "the first chunk", "idle": "the next chunk",
            "total": "the end of the stream", "connect": "a connection"}.get(phase, "data")
    return StreamTimeout(f"timed out waiting for {what} ({phase} timeout); raise "
                         f"Timeouts.{phase} if the server is just slow", phase=phase)


def _reason(exc: BaseException) -> str:
    """The most specific cause in an exception chain, briefly (never headers)."""
    seen: List[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in seen:
        seen.append(current)
        nested = getattr(current, "reason", None)
        if isinstance(nested, BaseException):
            current = nested
            continue
        args = getattr(current, "args", ())
        inner = next((a for a in args if isinstance(a, BaseException)), None)
        current = inner or current.__cause__ or current.__context__
    root = seen[-1]
    text = str(root) or type(root).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _origin(url: str) -> str:
    """scheme://host:port of a URL (never user info or the query)."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}" if sep else host
