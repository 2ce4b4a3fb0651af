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

:func:`read_prompts` yields a :class:`~streamkit.batch.promptline.PromptLine`
per good line and a :class:`~streamkit.batch.promptline.Problem` per bad one
(the rules of a line are :mod:`streamkit.batch.promptline`); it never raises
for bad content, only :class:`~streamkit.errors.ConfigError` when the file
cannot be opened.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
from typing import IO, Any, Iterator, List, Mapping, Optional, Tuple

from .. import _json
from ..errors import ConfigError
from .promptline import Item, Problem, PromptLine, checked_model, json_type, parse_object

__all__ = ["FORMATS", "InputFile", "detect_format", "read_prompts", "spool"]

FORMATS = ("jsonl", "txt", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".txt": "txt", ".csv": "csv", ".tsv": "csv"}
_BOM = b"\xef\xbb\xbf"
_CSV_FIELDS = ("id", "prompt", "system", "model")  # by their default column names
_SPOOL_CHUNK = 1 << 20


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
            yield checked_model(PromptLine(number, str(number), prompt=text), name,
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
        return checked_model(PromptLine(number, str(number), prompt=value), name,
                              default_model)
    if not isinstance(value, dict):
        return Problem(name, number, f"expected a JSON string or object, got "
                                     f"{json_type(value)}")
    return parse_object(value, number, name, default_model)


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
    return checked_model(line, name, default_model)


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


def _json_error(exc: BaseException) -> str:
    # Both decoders raise json.JSONDecodeError (orjson's subclasses it); its
    # "line 1" is meaningless for a one-line document, the column is not.
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
