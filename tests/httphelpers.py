"""Shared pieces of the ``_http`` tests: timeouts, a transport fixture, open and read-all."""

from __future__ import annotations

from typing import Optional

from streamkit._http import CancelToken, Response, Transport
from streamkit.config import Timeouts

__all__ = ["FAST", "WAIT", "open_", "read_all"]

FAST = Timeouts(connect=2, first_token=5, idle=5)
WAIT = 5.0  # generous upper bound for events that normally take milliseconds


def open_(t: Transport, url: str, cancel: Optional[CancelToken] = None,
          timeouts: Timeouts = FAST) -> Response:
    """POST ``{}`` to ``url``/api/generate; the response once its headers are in."""
    return t.open(url + "/api/generate", b"{}", timeouts=timeouts,
                  cancel=cancel or CancelToken())


def read_all(resp: Response) -> bytes:
    """The rest of the body (each read waits at most WAIT seconds)."""
    parts = []
    while True:
        data = resp.read_some(WAIT)
        if not data:
            return b"".join(parts)
        parts.append(data)
