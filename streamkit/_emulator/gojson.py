"""Decode request bodies the way Ollama (gin + Go encoding/json) does, with
Go's error messages, so clients see the same 400 texts as from a real server."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["BodyError", "decode_body", "go_quote", "str_field"]

MISSING_BODY = "missing request body"

# Go field types of the request structs we validate (JSON kind accepted, Go type shown).
_STRING = ("string", "string")
_BOOL = ("bool", "bool")
_MAP = ("object", "map[string]interface {}")
_INT = ("number", "int")
_FIELDS: Dict[str, Dict[str, Tuple[str, str]]] = {
    "api.GenerateRequest": {"model": _STRING, "prompt": _STRING, "system": _STRING,
                            "suffix": _STRING, "template": _STRING, "stream": _BOOL,
                            "raw": _BOOL, "options": _MAP},
    "api.ChatRequest": {"model": _STRING, "stream": _BOOL, "options": _MAP,
                        "messages": ("array", "[]api.Message")},
    "api.ShowRequest": {"model": _STRING, "name": _STRING, "verbose": _BOOL},
    "api.PullRequest": {"model": _STRING, "name": _STRING, "stream": _BOOL,
                        "insecure": _BOOL},
    "openai.ChatCompletionRequest": {"model": _STRING, "stream": _BOOL,
                                     "messages": ("array", "[]openai.Message")},
    "openai.CompletionRequest": {"model": _STRING, "stream": _BOOL},
    "api.EmbedRequest": {"model": _STRING, "truncate": _BOOL, "dimensions": _INT,
                         "options": _MAP},
    "api.EmbeddingRequest": {"model": _STRING, "prompt": _STRING, "options": _MAP},
    "openai.EmbedRequest": {"model": _STRING, "dimensions": _INT, "encoding_format": _STRING},
}


class BodyError(Exception):
    """A request body the server rejects: ``status`` and Ollama's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _quote_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    quoted = json.dumps(ch)[1:-1]
    return f"'{quoted}'"


def _go_syntax_message(exc: json.JSONDecodeError) -> str:
    doc, pos = exc.doc, exc.pos
    if pos >= len(doc.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    ch = _quote_char(doc[pos])
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if exc.msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if exc.msg.startswith("Expecting ','"):
        return f"invalid character {ch} after object key:value pair"
    if exc.msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    return f"invalid character {ch} looking for beginning of value"


def _check_fields(obj: Mapping[str, Any], go_type: str) -> None:
    for name, (kind, go_name) in _FIELDS.get(go_type, {}).items():
        if name not in obj or obj[name] is None:
            continue
        value = obj[name]
        actual = _kind(value)
        if go_name == "int" and isinstance(value, float) and not value.is_integer():
            actual = f"number {value}"  # Go: a fraction cannot go into an int
        if actual != kind:
            struct = go_type.split(".", 1)[1]
            raise BodyError(400, f"json: cannot unmarshal {actual} into Go struct field "
                                 f"{struct}.{name} of type {go_name}")


def decode_body(raw: bytes, go_type: str) -> Dict[str, Any]:
    """The request object, decoded like gin's ShouldBindJSON (first JSON value only).

    Raises:
        BodyError: 400 with Go's message for an empty, malformed or mistyped body.
    """
    text = raw.decode("utf-8", errors="replace")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise BodyError(400, MISSING_BODY)
    try:
        obj, _ = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise BodyError(400, _go_syntax_message(exc)) from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BodyError(400, f"json: cannot unmarshal {_kind(obj)} into Go value of type "
                             f"{go_type}")
    _check_fields(obj, go_type)
    return obj


def go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` prints it (double quotes, escapes) for plain names."""
    return json.dumps(text, ensure_ascii=False)


def str_field(obj: Mapping[str, Any], *names: str) -> str:
    """The first non-empty string among ``names`` ("" if none)."""
    for name in names:
        value: Optional[Any] = obj.get(name)
        if isinstance(value, str) and value:
            return value
    return ""
