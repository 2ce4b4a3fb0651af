"""The JSON decoder used on the hot path: orjson when installed, else the stdlib.

orjson comes with the optional extra ``fast`` (``pip install streamkit[fast]``)
and decodes a typical stream record several times faster than :mod:`json`.

``loads(data)`` takes the bytes of one complete record and returns the decoded
value. Both backends decode strictly as UTF-8 (the stdlib's own encoding
sniffing, which would accept UTF-16/32, is bypassed). Every failure, invalid
UTF-8 included, raises one of :data:`DECODE_ERRORS`.

Known difference: orjson also rejects lone surrogate escapes (``"\\ud800"``),
which the stdlib accepts; Ollama never sends them (Go replaces invalid text
with U+FFFD).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Tuple, Type

__all__ = ["BACKEND", "DECODE_ERRORS", "fast_loads", "loads", "stdlib_loads"]

# json.JSONDecodeError, orjson.JSONDecodeError and UnicodeDecodeError are all
# ValueErrors; RecursionError covers absurdly nested input in the stdlib.
DECODE_ERRORS: Tuple[Type[Exception], ...] = (ValueError, RecursionError)


def stdlib_loads(data: bytes) -> Any:
    """Decode one JSON document from UTF-8 bytes with the standard library."""
    return json.loads(data.decode("utf-8"))


fast_loads: Optional[Callable[[bytes], Any]]
try:
    import orjson
except ImportError:  # the optional extra "fast" is not installed
    fast_loads = None
else:
    fast_loads = orjson.loads

loads: Callable[[bytes], Any] = fast_loads if fast_loads is not None else stdlib_loads
BACKEND = "orjson" if fast_loads is not None else "json"
