"""Reading Ollama's ``/api/pull`` reply: progress records, one JSON object a line.

:func:`progress` turns an open reply into the records a caller iterates
(``Client.pull``). A record with ``error`` set ends the pull with
ServerStreamError; anything that is not a JSON object is a ProtocolError.
The idle timeout bounds the wait for the next *whole* record, so a server
trickling a record that never ends still times out.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Optional

from . import _json
from ._http import Response
from .errors import ProtocolError, ServerStreamError
from .wire.lines import LineFramer

__all__ = ["progress"]


def progress(response: Response, model: str, idle: Optional[float]) -> Iterator[Dict[str, Any]]:
    """Yield the progress records of ``response`` (status already checked)
    until its body ends. Does not close ``response``.

    Blocks at most ``idle`` seconds (None: no limit) for each whole record.
    Raises ServerStreamError, ProtocolError, StreamTimeout, StreamInterrupted.
    """
    framer = LineFramer()
    deadline = None if idle is None else time.monotonic() + idle
    while True:
        data = response.read_some(None if deadline is None else deadline - time.monotonic())
        lines = framer.feed(data) if data else framer.flush()
        if lines and idle is not None:
            deadline = time.monotonic() + idle
        for line in lines:
            record = _decode(line)
            if record.get("error"):
                raise ServerStreamError(f"pulling {model!r} failed: {record['error']}")
            yield record
        if not data:
            return


def _decode(line: bytes) -> Dict[str, Any]:
    try:
        record = _json.loads(line)
    except _json.DECODE_ERRORS as exc:
        raise ProtocolError(f"undecodable progress record from the server: {exc}") from exc
    if not isinstance(record, dict):
        raise ProtocolError("a progress record from the server is not a JSON object")
    return record
