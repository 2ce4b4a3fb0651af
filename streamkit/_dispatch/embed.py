"""An embed request as a dispatcher job: what ``Dispatcher.submit`` returns for one.

A :class:`~streamkit.Stream` is what the pool runs for a chat or generate
request; an :class:`EmbedCall` stands in for it for an
:class:`~streamkit.EmbedRequest`. It has the parts of a Stream the pool and
``map``/``events`` use (``_run``, ``cancel``, ``result``, ``id``, ``host``,
``request``) and no chunks: an embed reply is one JSON document, so there
is nothing to hand out before the result.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._http import CancelToken, Poller
from ..errors import Cancelled
from ..records import EmbedRequest, EmbedResult

if TYPE_CHECKING:
    from ..client import Client
    from ..stream import Route

__all__ = ["EmbedCall"]


class EmbedCall:
    """One embed request queued for, or running on, a dispatcher worker.

    ``result(timeout)`` waits for the :class:`EmbedResult` (which carries any
    error instead of raising it); ``cancel()`` ends the call from any thread,
    also before it starts (its result then carries Cancelled). Thread-safe.
    """

    def __init__(self, client: Client, request: EmbedRequest, route: Optional[Route]) -> None:
        self._client = client
        self._request = request
        self._route = route
        self._token = CancelToken()
        self._ended = threading.Event()
        self._result: Optional[EmbedResult] = None
        self._host: Optional[str] = None

    @property
    def id(self) -> Optional[str]:
        return self._request.id

    @property
    def request(self) -> EmbedRequest:
        return self._request

    @property
    def host(self) -> Optional[str]:
        """Base URL of the host that answered (or last failed); None before then."""
        return self._host

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<EmbedCall {self.id!r} {state} inputs={len(self._request.inputs)}>"

    def _run(self, sink: Optional[Callable[[Any], None]] = None,
             poller: Optional[Poller] = None) -> None:
        """Run the request in this (worker) thread; never raises. ``sink`` gets
        nothing; ``poller`` is not used (a reply is read whole)."""
        try:
            if self._token.cancelled:
                result = EmbedResult(id=self.id, model=self._request.model, host="",
                                     error=Cancelled("the embed request was cancelled "
                                                     "before it started"))
            else:
                result = self._client._run_embed(self._request, route=self._route,
                                                 token=self._token)
        except BaseException as exc:  # e.g. the client was closed: keep "ends exactly once"
            result = EmbedResult(id=self.id, model=self._request.model, host="", error=exc)
        self._host = result.host or None
        self._result = result
        self._ended.set()

    def cancel(self) -> bool:
        """Cancel from any thread; True if this call cancelled a call not yet ended."""
        if self._ended.is_set():
            return False
        return self._token.cancel()

    def result(self, timeout: Optional[float] = None) -> EmbedResult:
        """Wait for the end and return the result; never raises the request's error.

        Raises:
            TimeoutError: the call did not end within ``timeout`` seconds.
        """
        if not self._ended.wait(timeout):
            raise TimeoutError(f"embed request {self.id!r} did not end within {timeout} s")
        assert self._result is not None
        return self._result
