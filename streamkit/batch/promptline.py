"""One prompt of a batch: the line record, the problem record, the rules of a line.

:class:`PromptLine` is a validated prompt and :class:`Problem` a bad line
(where it is and what to do about it). :func:`parse_object` checks one
prompt object by the line rules (the fields a JSONL line may have, their
types, base64 images, a model from the line or the run) and returns one or
the other; it never raises for bad content. It serves every source of
prompt objects: a JSONL line (:mod:`streamkit.batch.input`, which reads the
files) and a Ray Data row (``streamkit._raywork``). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

__all__ = ["Item", "Problem", "PromptLine", "THINK_LEVELS", "checked_model", "json_type",
           "parse_object"]

_JSONL_FIELDS = ("id", "prompt", "messages", "model", "system", "options", "format", "think",
                 "images")
THINK_LEVELS = ("low", "medium", "high")


class Problem(NamedTuple):
    """A bad line: where it is and what to do about it."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class PromptLine:
    """One validated prompt. Exactly one of ``prompt`` and ``messages`` is set.

    Fields left None fall back to the run's defaults (``-m``, ``--system``, ...).
    """

    line: int
    id: str
    prompt: Optional[str] = None
    messages: Optional[List[Mapping[str, Any]]] = None
    model: Optional[str] = None
    system: Optional[str] = None
    options: Optional[Mapping[str, Any]] = None
    format: Optional[Union[str, Mapping[str, Any]]] = None
    think: Optional[Union[bool, str]] = None
    images: Optional[List[str]] = None


Item = Union[PromptLine, Problem]


def parse_object(obj: Dict[str, Any], number: int, name: str,
                 default_model: Optional[str]) -> Item:
    """Validate one prompt object (a decoded JSONL line, or a Ray Data row) by the line rules."""
    try:
        line = _from_object(obj, number)
    except _LineError as exc:
        return Problem(name, number, str(exc))
    return checked_model(line, name, default_model)


class _LineError(Exception):
    """A problem found while converting one line (internal to this module)."""


def _from_object(obj: Dict[str, Any], number: int) -> PromptLine:
    unknown = sorted(set(obj) - set(_JSONL_FIELDS))
    if unknown:
        raise _LineError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(_JSONL_FIELDS)}")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise _LineError("give exactly one of \"prompt\" or \"messages\""
                         if has_prompt else "missing \"prompt\" or \"messages\"")
    prompt = _prompt(obj["prompt"]) if has_prompt else None
    messages = _messages(obj["messages"]) if has_messages else None
    if "images" in obj and not has_prompt:
        raise _LineError("\"images\" goes with \"prompt\"; in \"messages\" give each "
                         "message its own \"images\"")
    return PromptLine(
        line=number,
        id=_line_id(obj.get("id"), number),
        prompt=prompt,
        messages=messages,
        model=_optional_str(obj, "model", nonempty=True),
        system=_optional_str(obj, "system"),
        options=_options(obj.get("options")),
        format=_format(obj.get("format")),
        think=_think(obj.get("think")),
        images=_images(obj.get("images"), "\"images\""),
    )


def _line_id(value: Any, number: int) -> str:
    if value is None:
        return str(number)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _LineError(f"\"id\" must be a string or an integer, got {json_type(value)}")
    text = str(value)
    if not text:
        raise _LineError("\"id\" is empty; give a non-empty id or leave it out")
    return text


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise _LineError(f"\"prompt\" must be a string, got {json_type(value)}")
    if not value.strip():
        raise _LineError("\"prompt\" is empty")
    return value


def _messages(value: Any) -> List[Mapping[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _LineError("\"messages\" must be a non-empty list of {\"role\", \"content\"} "
                         "objects")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _LineError(f"messages[{i}] must be an object, got {json_type(message)}")
        if not isinstance(message.get("role"), str):
            raise _LineError(f"messages[{i}] needs a string \"role\" (system, user, "
                             "assistant or tool)")
        content = message.get("content")
        if not isinstance(content, str):
            raise _LineError(f"messages[{i}] needs a string \"content\", got "
                             f"{json_type(content)}")
        _images(message.get("images"), f"messages[{i}].images")
    return value


def _images(value: Any, where: str) -> Optional[List[str]]:
    """A list of base64 strings (an image file's bytes, as Ollama expects them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _LineError(f"{where} must be a list of base64 strings, got {json_type(value)}")
    for n, text in enumerate(value):
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _LineError(f"{where}[{n}] is not base64 (encode the image file's bytes, "
                             "e.g. `base64 -w0 cat.png`)") from None
    return value


def _optional_str(obj: Mapping[str, Any], key: str, *, nonempty: bool = False) -> Optional[str]:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (nonempty and not value):
        raise _LineError(f"\"{key}\" must be a non-empty string, got {json_type(value)}"
                         if nonempty else f"\"{key}\" must be a string, got {json_type(value)}")
    return value


def _options(value: Any) -> Optional[Mapping[str, Any]]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _LineError(f"\"options\" must be an object like {{\"temperature\": 0}}, got "
                         f"{json_type(value)}")
    return value


def _format(value: Any) -> Optional[Union[str, Mapping[str, Any]]]:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        return value
    raise _LineError(f"\"format\" must be \"json\" or a JSON schema object, got "
                     f"{json_type(value)}")


def _think(value: Any) -> Optional[Union[bool, str]]:
    if value is None or isinstance(value, bool) or value in THINK_LEVELS:
        return value  # type: ignore[no-any-return]
    raise _LineError(f"\"think\" must be true, false or one of {', '.join(THINK_LEVELS)}")


def checked_model(line: PromptLine, name: str, default_model: Optional[str]) -> Item:
    """``line``, or a Problem when neither it nor the run (``default_model``) names a model."""
    if line.model is None and default_model is None:
        return Problem(name, line.line, "no model: pass -m MODEL or give the line a "
                                        "\"model\" field")
    return line


def json_type(value: Any) -> str:
    """What a decoded JSON value is, in words, for a problem's message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
