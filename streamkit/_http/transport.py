"""HTTP transport: the only place the package sends requests, and where their errors end.

One :class:`Transport` per Client. Every worker thread gets its own
``requests.Session`` (sessions are not thread-safe: cookies, adapters), and
all of them mount ONE shared adapter (:class:`~.connection.Adapter`) whose
pool holds ``pool_size`` connections per host, so connections are reused
across requests and threads.

Sending: what ``Session.post`` would work out for a URL (proxies from the
environment, ``~/.netrc``, merged headers, the prepared URL) is worked out
once per URL (:class:`_Target`); each request then copies the headers and
hands its body to the shared adapter's ``send``, and the session follows
redirects. That is most of a short request's CPU saved, on the path where
many workers compete for one GIL.

The lean path: a plain ``http://`` URL with no proxy is then not sent
through the adapter at all but written and read here (:mod:`.lean`), with
the prepared headers, over its own pool of keep-alive sockets; TLS, proxies
and redirects stay with requests (see ``docs/architecture.md``).

Cancelling: the attempt's :class:`~.cancel.CancelToken` is attached to every
pooled connection the attempt takes, so ``cancel()`` can shut the socket down
in every phase: waiting for the status line, mid-body, and right after a
connect finishes. A blocked ``recv`` then returns at once and the server sees
the disconnect, which is the only signal Ollama honours. A connect in
progress has no socket object yet; it ends within the connect timeout (the
stream layer ends the stream for its consumer at once anyway).

Errors: what requests raises is translated by :mod:`.translate` (the table
is there) before it leaves :meth:`Transport.open` or :meth:`Response.read_some`.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import requests
from requests.utils import select_proxy

from .._version import __version__
from ..config import Secret, Timeouts
from ..errors import Cancelled, ConfigError
from .bounded import INFO_BODY_LIMIT, read_bounded
from .cancel import CancelToken
from .connection import ACTIVE, Adapter
from .lean import Key, LeanPool, LeanTarget, connect, exchange
from .response import Response
from .translate import open_error

__all__ = ["Transport"]

BODY_TIMEOUT_S = 30.0
"""Per-read budget for ``read_body`` (an error reply) when no idle timeout is set."""

DEFAULT_POOLS = 32
"""Hosts whose connection pools the shared adapter keeps."""

LEAN_PATH = True
"""Open plain-HTTP, unproxied requests on the lean path (:mod:`.lean`); False:
always through requests (the tests of that path turn it off)."""

MAX_TARGETS = 256
"""URLs whose prepared request a Transport keeps (see :class:`_Target`)."""

_CLOSED = "this streamkit client (transport) is closed"

_USER_AGENT = f"streamkit/{__version__} (+requests/{requests.__version__})"


class Transport:
    """HTTP for one Client: a shared connection pool, a Session per thread. Thread-safe.

    ``headers`` are sent with every request; ``api_key`` as
    ``Authorization: Bearer`` (requests drops it on a redirect to another
    host; it never appears in a repr, log line or error message).

    The environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``~/.netrc``)
    is read, with requests' rules, when the Transport first opens a URL, and
    kept for its life: change it before creating the Client. Cookies are
    neither sent nor kept by :meth:`open`.
    """

    def __init__(self, *, pool_size: int = 10, headers: Optional[Mapping[str, str]] = None,
                 api_key: Optional[Secret] = None) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._pool_size = pool_size
        self._adapter = Adapter(pool_connections=DEFAULT_POOLS, pool_maxsize=pool_size,
                                 max_retries=0)
        self._headers: Dict[str, str] = {"User-Agent": _USER_AGENT,
                                         "Accept-Encoding": "identity",
                                         "Content-Type": "application/json"}
        self._headers.update(headers or {})
        self._api_key = api_key
        self._secrets = _secrets(self._headers, api_key)
        self._local = threading.local()
        self._targets: Dict[str, _Target] = {}
        self._lean_pool = LeanPool(pool_size)
        self._closed = False

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return f"<streamkit Transport pool_size={self._pool_size} api_key={key}>"

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self, url: str, body: bytes, *, timeouts: Timeouts,
             cancel: CancelToken) -> Response:
        """POST ``body`` to ``url``; return once the status line and headers are in.

        Blocks for at most ``timeouts.connect`` (connecting, TLS included)
        plus ``timeouts.first_token`` for the whole head of the reply (status
        line, any ``100 Continue``, headers: a deadline, however the bytes
        trickle in; again per redirect hop); ``cancel`` wakes it at once once
        a socket exists.

        Raises:
            ConnectError: refused, DNS, TLS, or a reset before the status line.
            StreamTimeout: ``phase="connect"`` or ``phase="first_token"``.
            Cancelled: ``cancel`` was cancelled before or during the call.
            RuntimeError: the transport is closed.
        """
        if cancel.cancelled:
            raise Cancelled()
        # No Session for a URL seen before on the lean path: making one (two
        # adapters, their pool managers) is a start burst's cost per thread.
        target = self._targets.get(url)
        if target is None:
            target = self._target(self._session(), url)
        redirect: Optional[Response] = None
        if target.lean is not None:
            if self._closed:
                raise RuntimeError(_CLOSED)
            lean = self._open_lean(target.lean, body, timeouts, cancel)
            if not lean.is_redirect:
                return lean
            redirect = lean  # followed by requests, from this reply
        session = self._session()
        ACTIVE.token, ACTIVE.head_timeout = cancel, timeouts.first_token
        try:
            if redirect is None:
                resp = target.send(session, body, (timeouts.connect, timeouts.first_token))
            else:
                resp = target.follow(session, redirect, body,
                                     (timeouts.connect, timeouts.first_token))
        except requests.RequestException as exc:
            cancel.detach_all()
            raise open_error(exc, url, cancel) from exc
        except BaseException:
            cancel.detach_all()
            raise
        finally:
            ACTIVE.token = ACTIVE.head_timeout = None
        response = Response(resp, cancel, timeouts.idle or BODY_TIMEOUT_S,
                            secrets=self._secrets)
        if cancel.event.is_set():  # cancelled while the headers were being parsed
            response.close()
            raise Cancelled()
        return response

    def _open_lean(self, target: LeanTarget, body: bytes, timeouts: Timeouts,
                   cancel: CancelToken) -> Response:
        """:meth:`open` on the lean path (:mod:`.lean`); a redirect is returned
        read and released, for requests to follow."""
        sock = self._lean_pool.take(target.key)
        while True:
            reused = sock is not None
            if sock is None:
                sock = connect(target, timeouts.connect, cancel)
            else:
                cancel.attach(sock)
            try:
                head = exchange(sock, target, body, timeouts.first_token, cancel,
                                reused=reused)
            except BaseException:
                cancel.detach(sock)
                sock.close()
                raise
            if head is not None:
                break
            cancel.detach(sock)  # a keep-alive socket the server had closed
            sock.close()
            sock = None
        response = Response.from_socket(
            head, target.url, sock, cancel, timeouts.idle or BODY_TIMEOUT_S,
            functools.partial(self._give_back, target.key, sock), secrets=self._secrets)
        if response.is_redirect:
            response.read_body()  # to its end: the connection is free again
            response.close()
        elif cancel.event.is_set():  # cancelled while the head was being parsed
            response.close()
            raise Cancelled()
        return response

    def _give_back(self, key: Key, sock: socket.socket, reusable: bool) -> None:
        if reusable:
            self._lean_pool.give(key, sock)
        else:
            sock.close()

    def request_json(self, method: str, url: str, body: Any = None, *,
                     timeout: float, limit: int = INFO_BODY_LIMIT) -> Tuple[int, Any]:
        """A small non-streaming request (``/api/tags``, ``/api/version``, ...).

        Returns ``(status, value)``: the decoded JSON body, or the body as
        text when it is not JSON (``None`` for an empty body). ``timeout``
        is a deadline for the whole exchange: connecting takes at most
        ``timeout``, and the reply (head and body) must be in by then too,
        however slowly its bytes trickle in. The body is read as sent
        (``Accept-Encoding: identity``; a compressed reply is refused, never
        inflated) and at most ``limit`` bytes of it.

        Raises:
            ConnectError: the server could not be reached or broke the reply.
            StreamTimeout: ``phase="connect"``, or ``"first_token"`` when the
                reply did not come in time.
            ResponseTooLarge: the body is over ``limit`` bytes.
            ProtocolError: the body is compressed, or badly framed.
            RuntimeError: the transport is closed.
        """
        session = self._session()
        data = None if body is None else json.dumps(body).encode("utf-8")
        deadline = time.monotonic() + timeout
        cancel = CancelToken()  # nobody cancels; Response wants one
        ACTIVE.head_timeout = timeout
        try:
            resp = session.request(method, url, data=data, timeout=(timeout, timeout),
                                   stream=True)
        except requests.RequestException as exc:
            raise open_error(exc, url, None) from exc
        finally:
            ACTIVE.head_timeout = None
        response = Response(resp, cancel, None, secrets=self._secrets)
        try:
            content = read_bounded(response, deadline, limit)
        finally:
            response.close()
        if not 200 <= response.status < 300:
            content = response.redact(content)  # an error body becomes an error message
        if not content:
            return response.status, None
        try:
            return response.status, json.loads(content)
        except ValueError:
            return response.status, content.decode("utf-8", "replace")

    def close(self) -> None:
        """Close every pooled connection. Idempotent; in-flight streams end with errors."""
        self._closed = True
        self._adapter.close()
        self._lean_pool.close()

    def _target(self, session: requests.Session, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= MAX_TARGETS:  # bounded: URLs are hosts x paths
                self._targets.clear()
            target = self._targets[url] = _Target(session, self._adapter, url)
        return target

    def _session(self) -> requests.Session:
        if self._closed:
            raise RuntimeError(_CLOSED)
        session: Optional[requests.Session] = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
            session.headers.update(self._headers)
            if self._api_key is not None:
                session.headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
            self._local.session = session
        return session


_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "password")
"""A header whose lower-cased name holds one of these carries a credential."""


def _secrets(headers: Mapping[str, str], api_key: Optional[Secret]) -> Tuple[bytes, ...]:
    """What must never be printed: the API key and the values of credential headers.

    A server may echo a request header in an error body (a 401 page quoting
    ``Authorization``); error bodies are redacted with these before they
    become error messages.
    """
    found = set()
    if api_key is not None and api_key.reveal():
        found.add(api_key.reveal())
    for name, value in headers.items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS) and value:
            found.add(value)
            found.update(part for part in value.split() if len(part) >= 8)  # the bare token
    # Longest first, so "Bearer KEY" is masked whole before KEY alone.
    return tuple(sorted((v.encode("utf-8") for v in found if len(v) >= 4), key=len,
                        reverse=True))


_Timeout = Tuple[Any, Any]
"""(connect, read) seconds or None, as requests takes them."""


class _Target:
    """What ``Session.post(url, ...)`` works out for one URL, worked out once.

    ``Session.request`` spends most of a short request's CPU on things that
    cannot change between two POSTs to the same URL: scanning ``os.environ``
    for proxies (twice), looking for ``~/.netrc``, merging the session's
    headers, preparing the URL. This keeps the prepared request (headers
    and authentication included) and the proxy/TLS settings, and each
    request only copies the headers and sets its body. The environment is
    therefore read when a Transport first opens a URL, not on every request.

    Cookies are neither sent nor kept (Ollama and OpenAI-compatible servers
    set none); redirects are followed by the session, as ``Session.post``
    would, so ``Authorization`` never follows a redirect to another host.
    """

    __slots__ = ("_adapter", "_cert", "_headers", "_hooks", "_proxies", "_url", "_verify",
                 "lean")

    def __init__(self, session: requests.Session, adapter: Adapter, url: str) -> None:
        template = session.prepare_request(requests.Request("POST", url, data=b""))
        settings = session.merge_environment_settings(template.url or url, {}, True, None,
                                                      None)
        self._adapter = adapter
        self._url = template.url
        self._headers = template.headers
        self._hooks = template.hooks
        # Typed Any: requests' stubs disagree among their own methods here.
        self._proxies: Any = settings["proxies"]
        self._verify: Any = settings["verify"]
        self._cert: Any = settings["cert"]
        # The lean path (see .lean) where nothing requests does is needed.
        self.lean: Optional[LeanTarget] = None
        if (LEAN_PATH and self._url is not None and self._url.startswith("http://")
                and select_proxy(self._url, self._proxies) is None
                and not any(self._hooks.values())):
            try:
                self.lean = LeanTarget(self._url, self._headers)
            except (ValueError, UnicodeError):  # headers http.client would refuse
                self.lean = None

    def send(self, session: requests.Session, body: bytes,
             timeout: _Timeout) -> requests.Response:
        """POST ``body``; the response once its headers are in (redirects followed).

        Raises what ``requests`` raises (RequestException and subclasses).
        """
        request = self._prepared(body)
        resp = self._adapter.send(request, stream=True, timeout=timeout, verify=self._verify,
                                  cert=self._cert, proxies=self._proxies)
        if resp.is_redirect:
            resp = self._follow(session, resp, request, timeout)
        return resp

    def follow(self, session: requests.Session, redirect: Response, body: bytes,
               timeout: _Timeout) -> requests.Response:
        """Follow the redirect the lean path got for POSTing ``body`` (read and
        released), as :meth:`send` would have; the final response.

        Raises what ``requests`` raises.
        """
        request = self._prepared(body)
        resp = requests.Response()
        resp.status_code = redirect.status
        resp.headers = requests.structures.CaseInsensitiveDict(redirect.headers)
        resp.url = redirect.url
        resp.request = request
        # PRIVATE: Response._content/_content_consumed, which resolve_redirects
        # reads ("consume the socket") and close() checks. Checked on requests
        # 2.28 and 2.32.
        resp._content = b""  # consumed: nothing left to read or release
        resp._content_consumed = True  # type: ignore[attr-defined]
        return self._follow(session, resp, request, timeout)

    def _prepared(self, body: bytes) -> requests.PreparedRequest:
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._url
        headers = self._headers.copy()
        headers["Content-Length"] = str(len(body))
        request.headers = headers
        request.body = body
        request.hooks = self._hooks
        return request

    def _follow(self, session: requests.Session, resp: requests.Response,
                request: requests.PreparedRequest,
                timeout: _Timeout) -> requests.Response:
        """Follow redirects as ``Session.send`` does (its limits, its auth stripping)."""
        request.prepare_cookies(requests.cookies.RequestsCookieJar())  # none sent, none kept
        hops = list(session.resolve_redirects(resp, request, stream=True, timeout=timeout,
                                              verify=self._verify, cert=self._cert,
                                              proxies=self._proxies))
        return hops[-1] if hops else resp

