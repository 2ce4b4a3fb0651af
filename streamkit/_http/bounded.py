"""Whole-body reads with a size cap and a deadline, for replies that are not streams.

Info endpoints (``/api/tags``, ``/api/version``, ``/api/show``...) and
embeddings are read whole before they are decoded. A hostile or broken
server must not make that read unbounded: the body is read as sent (we ask
for ``Accept-Encoding: identity`` and refuse anything else, so a 1 MB gzip
bomb is never inflated), at most ``limit`` bytes of it, and by a deadline
for the whole body, not per read.
"""

from __future__ import annotations

import time
from typing import List, Optional

from ..errors import ProtocolError, ResponseTooLarge, StreamTimeout
from .response import Response

__all__ = ["INFO_BODY_LIMIT", "read_bounded", "refuse_encoding"]

INFO_BODY_LIMIT = 8 * 1024 * 1024
"""Largest info-endpoint body read (a model list of thousands of entries fits)."""


def refuse_encoding(response: Response, what: str = "reply") -> None:
    """Raise ProtocolError if the body is content-encoded (we asked for identity)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(f"the server sent a {encoding!r}-compressed {what} although "
                            "streamkit asked for an uncompressed one (Accept-Encoding: "
                            "identity); it is refused, not inflated")


def too_large(what: str, size: int, limit: int, hint: str = "") -> ResponseTooLarge:
    return ResponseTooLarge(f"the {what} is larger than {limit} bytes (at least {size}); "
                            f"nothing past the cap was read{hint}", limit=limit)


def read_bounded(response: Response, deadline: Optional[float], limit: int, *,
                 what: str = "reply") -> bytes:
    """The whole body of ``response``, by ``deadline`` (``time.monotonic()``; None: none).

    Raises:
        ResponseTooLarge: the body is (or announces it is) over ``limit`` bytes.
        ProtocolError: the body is compressed, or badly framed.
        StreamTimeout: ``phase="first_token"``: the body was not all in by the deadline.
        StreamInterrupted: the connection broke before the end of the body.
    """
    refuse_encoding(response, what)
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(what, int(length), limit)
    parts: List[bytes] = []
    size = 0
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise StreamTimeout(f"the server did not send its whole {what} in time; it "
                                "may be overloaded", phase="first_token")
        data = response.read_some(left, phase="first_token")
        if not data:
            return b"".join(parts)
        size += len(data)
        if size > limit:
            raise too_large(what, size, limit)
        parts.append(data)
