"""The JSON decoder used on the hot path: orjson when installed, else the stdlib.

orjson comes with the optional extra ``fast`` (``pip install streamkit[fast]``)
and decodes a typical stream record several times faster than :mod:`json`.

``loads(data)`` takes the bytes of one complete record and returns the decoded
value. Both backends decode strictly as UTF-8 (the stdlib's own encoding
sniffing, which would accept UTF-16/32, is bypassed). Every failure, invalid
UTF-8 included, raises one of :data:`DECODE_ERRORS`.

Both backends treat hostile values alike:

- a lone surrogate escape (``"\\ud800"``), which no UTF-8 encoder can write
  back, decodes as U+FFFD (what Ollama's Go encoder sends for invalid text);
  orjson refuses such a record, so it is decoded again by the stdlib path;
- ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``) are a
  decode error: no JSON encoder may write them back.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, NoReturn, Optional, Tuple, Type

__all__ = ["BACKEND", "DECODE_ERRORS", "fast_loads", "loads", "stdlib_loads"]

# json.JSONDecodeError, orjson.JSONDecodeError and UnicodeDecodeError are all
# ValueErrors; RecursionError covers absurdly nested input in the stdlib.
DECODE_ERRORS: Tuple[Type[Exception], ...] = (ValueError, RecursionError)

# An escape in the surrogate range; most records have none, so the walk
# replacing lone surrogates runs only when this matches.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} does not fit a float")
    return value


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


# Built once: json.loads with hooks would build a new decoder on every call
# (measured: the stdlib decode rate halved in benchmarks/decode.py).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def stdlib_loads(data: bytes) -> Any:
    """Decode one JSON document from UTF-8 bytes with the standard library."""
    value = _DECODER.decode(data.decode("utf-8"))
    if _SURROGATE_ESCAPE.search(data):
        value = _replace_surrogates(value)
    return value


def _orjson_loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        if _SURROGATE_ESCAPE.search(data):
            return stdlib_loads(data)  # lone surrogates: replaced, as by the stdlib path
        raise


fast_loads: Optional[Callable[[bytes], Any]]
try:
    import orjson
except ImportError:  # the optional extra "fast" is not installed
    fast_loads = None
else:
    fast_loads = _orjson_loads

loads: Callable[[bytes], Any] = fast_loads if fast_loads is not None else stdlib_loads
BACKEND = "orjson" if fast_loads is not None else "json"
