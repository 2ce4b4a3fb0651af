"""Prompt files for ``streamkit batch``: reading, validation, line numbers.

Formats (chosen by extension, or explicitly):

- ``jsonl``: one JSON value a line, either a string (the prompt) or an
  object with ``prompt`` or ``messages`` and optional ``id``, ``model``,
  ``system``, ``options``, ``format``, ``think``, ``images`` (base64
  strings, sent with a ``prompt``; a message may carry its own ``images``).
- ``txt``: one prompt a line; blank lines are skipped.
- ``csv``: a header row with a ``prompt`` column and optional ``id``,
  ``system``, ``model`` columns (other columns are ignored); the prompt and
  id columns may have other names (``prompt_column``, ``id_column``).

Files are read lazily, one line at a time, so a file of any size streams
through in constant memory. A UTF-8 BOM, CRLF line endings and a last line
without a newline are accepted. A line without an id gets its 1-based line
number in the file (for CSV the header is line 1).

:func:`read_prompts` yields a :class:`PromptLine` per good line and a
:class:`Problem` per bad one; it never raises for bad content, only
:class:`~streamkit.errors.ConfigError` when the file cannot be opened.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

from .. import _json
from ..errors import ConfigError

__all__ = [
    "FORMATS",
    "InputFile",
    "Problem",
    "PromptLine",
    "THINK_LEVELS",
    "detect_format",
    "parse_object",
    "read_prompts",
    "spool",
]

FORMATS = ("jsonl", "txt", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".txt": "txt", ".csv": "csv", ".tsv": "csv"}
_BOM = b"\xef\xbb\xbf"
_JSONL_FIELDS = ("id", "prompt", "messages", "model", "system", "options", "format", "think",
                 "images")
_CSV_FIELDS = ("id", "prompt", "system", "model")  # by their default column names
THINK_LEVELS = ("low", "medium", "high")
_SPOOL_CHUNK = 1 << 20


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


def detect_format(path: str, explicit: Optional[str] = None) -> str:
    """The input format: ``explicit`` if given, else from the extension; stdin is jsonl.

    Raises:
        ConfigError: unknown format or extension (says to pass --input-format).
    """
    if explicit is not None:
        if explicit not in FORMATS:
            raise ConfigError(f"unknown input format {explicit!r}; use one of {', '.join(FORMATS)}")
        return explicit
    if path == "-":
        return "jsonl"
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise ConfigError(
            f"cannot tell the format of {path!r} from its extension; name it .jsonl, .txt "
            f"or .csv, or pass --input-format")
    return _EXTENSIONS[ext]


def spool(source: IO[bytes]) -> str:
    """Copy a byte stream (stdin) into a temporary file and return its path.

    stdin can be read only once but a run reads its input twice (validation,
    then the run), so it goes to disk first: constant memory, disk space
    equal to the input. The caller deletes the file.
    """
    fd, path = tempfile.mkstemp(prefix="streamkit-stdin-", suffix=".spool")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, _SPOOL_CHUNK)
    return path


def read_prompts(path: str, fmt: str, *, default_model: Optional[str] = None,
                 display: Optional[str] = None, prompt_column: str = "prompt",
                 id_column: str = "id") -> Iterator[Item]:
    """Yield a PromptLine or a Problem for each non-blank line of ``path``, lazily.

    ``default_model`` is the run's ``-m``: a line without a model is a
    problem only when it is None. ``display`` names the file in problems
    (``<stdin>`` for a spooled stdin). ``prompt_column`` and ``id_column``
    name a CSV file's prompt and id columns (case-insensitive). Duplicate ids are not checked here
    (that needs the whole file; see :mod:`streamkit.batch.check`).

    Raises:
        ConfigError: the file cannot be opened.
    """
    name = display if display is not None else path
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator's finally
    except OSError as exc:
        raise ConfigError(f"cannot read prompt file {name!r}: {exc.strerror}") from exc
    try:
        if fmt == "csv":
            renamed = {"prompt": prompt_column.strip().lower(), "id": id_column.strip().lower()}
            yield from _read_csv(handle, name, default_model, renamed)
        else:
            yield from _read_lines(handle, name, fmt, default_model)
    finally:
        handle.close()


def _read_lines(handle: IO[bytes], name: str, fmt: str,
                default_model: Optional[str]) -> Iterator[Item]:
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Problem(name, number, "not valid UTF-8; save the file as UTF-8")
            continue
        if fmt == "txt":
            yield _checked_model(PromptLine(number, str(number), prompt=text), name,
                                 default_model)
        else:
            yield _parse_jsonl(raw, number, name, default_model)


def _parse_jsonl(raw: bytes, number: int, name: str, default_model: Optional[str]) -> Item:
    try:
        value = _json.loads(raw)
    except _json.DECODE_ERRORS as exc:
        return Problem(name, number, f"malformed JSON ({_json_error(exc)}); each line must be "
                                     "one JSON string or object")
    if isinstance(value, str):
        return _checked_model(PromptLine(number, str(number), prompt=value), name,
                              default_model)
    if not isinstance(value, dict):
        return Problem(name, number, f"expected a JSON string or object, got "
                                     f"{_json_type(value)}")
    return parse_object(value, number, name, default_model)


def parse_object(obj: Dict[str, Any], number: int, name: str,
                 default_model: Optional[str]) -> Item:
    """Validate one prompt object (a decoded JSONL line, or a Ray Data row) by the line rules."""
    try:
        line = _from_object(obj, number)
    except _LineError as exc:
        return Problem(name, number, str(exc))
    return _checked_model(line, name, default_model)


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
        raise _LineError(f"\"id\" must be a string or an integer, got {_json_type(value)}")
    text = str(value)
    if not text:
        raise _LineError("\"id\" is empty; give a non-empty id or leave it out")
    return text


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise _LineError(f"\"prompt\" must be a string, got {_json_type(value)}")
    if not value.strip():
        raise _LineError("\"prompt\" is empty")
    return value


def _messages(value: Any) -> List[Mapping[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _LineError("\"messages\" must be a non-empty list of {\"role\", \"content\"} "
                         "objects")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _LineError(f"messages[{i}] must be an object, got {_json_type(message)}")
        if not isinstance(message.get("role"), str):
            raise _LineError(f"messages[{i}] needs a string \"role\" (system, user, "
                             "assistant or tool)")
        content = message.get("content")
        if not isinstance(content, str):
            raise _LineError(f"messages[{i}] needs a string \"content\", got "
                             f"{_json_type(content)}")
        _images(message.get("images"), f"messages[{i}].images")
    return value


def _images(value: Any, where: str) -> Optional[List[str]]:
    """A list of base64 strings (an image file's bytes, as Ollama expects them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _LineError(f"{where} must be a list of base64 strings, got {_json_type(value)}")
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
        raise _LineError(f"\"{key}\" must be a non-empty string, got {_json_type(value)}"
                         if nonempty else f"\"{key}\" must be a string, got {_json_type(value)}")
    return value


def _options(value: Any) -> Optional[Mapping[str, Any]]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _LineError(f"\"options\" must be an object like {{\"temperature\": 0}}, got "
                         f"{_json_type(value)}")
    return value


def _format(value: Any) -> Optional[Union[str, Mapping[str, Any]]]:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        return value
    raise _LineError(f"\"format\" must be \"json\" or a JSON schema object, got "
                     f"{_json_type(value)}")


def _think(value: Any) -> Optional[Union[bool, str]]:
    if value is None or isinstance(value, bool) or value in THINK_LEVELS:
        return value  # type: ignore[no-any-return]
    raise _LineError(f"\"think\" must be true, false or one of {', '.join(THINK_LEVELS)}")


def _checked_model(line: PromptLine, name: str, default_model: Optional[str]) -> Item:
    if line.model is None and default_model is None:
        return Problem(name, line.line, "no model: pass -m MODEL or give the line a "
                                        "\"model\" field")
    return line


def _read_csv(handle: IO[bytes], name: str, default_model: Optional[str],
              renamed: Mapping[str, str]) -> Iterator[Item]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        yield Problem(name, 1, f"cannot read the CSV header: {_short(exc)}")
        return
    if header is None:
        return
    columns = [column.strip().lower() for column in header]
    if renamed["prompt"] not in columns:
        hint = "" if renamed["prompt"] != "prompt" else "; name it with --prompt-column NAME"
        yield Problem(name, 1, f"the header has no \"{renamed['prompt']}\" column (columns: "
                               f"{', '.join(columns) or 'none'}){hint}")
        return
    wanted = {field: renamed.get(field, field) for field in _CSV_FIELDS}
    index = {field: columns.index(column) for field, column in wanted.items()
             if column in columns}
    yield from _csv_rows(reader, index, name, default_model)


def _csv_rows(reader: Any, index: Mapping[str, int], name: str,
              default_model: Optional[str]) -> Iterator[Item]:
    # A quoted cell may span lines: the row starts one line after the previous row ended.
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield Problem(name, start, f"malformed CSV ({_short(exc)})")
            start = reader.line_num + 1
            continue
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        yield _csv_line(row, index, number, name, default_model)


def _csv_line(row: List[str], index: Mapping[str, int], number: int, name: str,
              default_model: Optional[str]) -> Item:
    def cell(field: str) -> str:
        i = index.get(field)
        return row[i] if i is not None and i < len(row) else ""

    prompt = cell("prompt")
    if not prompt.strip():
        return Problem(name, number, "empty \"prompt\" cell")
    line = PromptLine(number, cell("id").strip() or str(number), prompt=prompt,
                      model=cell("model").strip() or None, system=cell("system") or None)
    return _checked_model(line, name, default_model)


class InputFile:
    """The prompt file as ``(path, display name)``; stdin (``-``) is spooled to a
    temporary file, deleted on exit."""

    def __init__(self, inputs: str, stdin: Optional[IO[bytes]] = None) -> None:
        self._inputs = inputs
        self._stdin = stdin
        self._spooled: Optional[str] = None

    def __enter__(self) -> Tuple[str, str]:
        if self._inputs != "-":
            return self._inputs, self._inputs
        source = self._stdin if self._stdin is not None else sys.stdin.buffer
        self._spooled = spool(source)
        return self._spooled, "<stdin>"

    def __exit__(self, *exc_info: object) -> None:
        if self._spooled is not None:
            os.remove(self._spooled)


def _json_type(value: Any) -> str:
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


def _json_error(exc: BaseException) -> str:
    # Both decoders raise json.JSONDecodeError (orjson's subclasses it); its
    # "line 1" is meaningless for a one-line document, the column is not.
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
