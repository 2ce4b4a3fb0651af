"""Prompt files (``streamkit.batch.input``): formats, validation, line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest
from batchfiles import write as _write

from streamkit.batch.input import detect_format, read_prompts
from streamkit.batch.promptline import Problem, PromptLine
from streamkit.errors import ConfigError


def _items(path: str, fmt: str, model: Any = "m") -> List[Any]:
    return list(read_prompts(path, fmt, default_model=model))


# --- input ---------------------------------------------------------------------


def test_jsonl_forms_and_default_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", b"\n".join([
        b'"plain string"',
        b'{"prompt": "with id", "id": "a"}',
        b'',
        b'{"messages": [{"role": "user", "content": "hi"}], "think": true}',
        b'{"prompt": "p", "id": 7, "model": "x", "system": "s", "options": {"seed": 1},'
        b' "format": "json", "think": "high"}',
    ]) + b"\n")
    items = _items(path, "jsonl")
    assert all(isinstance(i, PromptLine) for i in items)
    assert [i.id for i in items] == ["1", "a", "4", "7"]
    assert items[0].prompt == "plain string"
    assert items[2].messages == [{"role": "user", "content": "hi"}] and items[2].think is True
    last = items[3]
    assert (last.model, last.system, last.options, last.format, last.think) == \
        ("x", "s", {"seed": 1}, "json", "high")


@pytest.mark.parametrize(("line", "message"), [
    (b'{"prompt": "x"', "malformed JSON"),
    (b'{"id": "z"}', 'missing "prompt" or "messages"'),
    (b'{"prompt": "a", "messages": []}', "exactly one of"),
    (b'{"prompt": 3}', '"prompt" must be a string'),
    (b'{"prompt": "  "}', '"prompt" is empty'),
    (b'{"messages": "hi"}', '"messages" must be a non-empty list'),
    (b'{"messages": [{"content": "x"}]}', 'needs a string "role"'),
    (b'{"messages": [{"role": "user", "content": 1}]}', 'needs a string "content"'),
    (b'{"prompt": "a", "id": true}', '"id" must be a string or an integer'),
    (b'{"prompt": "a", "options": [1]}', '"options" must be an object'),
    (b'{"prompt": "a", "think": "maybe"}', '"think" must be'),
    (b'{"prompt": "a", "format": 5}', '"format" must be'),
    (b'{"prompt": "a", "model": ""}', '"model" must be a non-empty string'),
    (b'{"prompt": "a", "sytem": "x"}', "unknown field(s) 'sytem'"),
    (b'[1, 2]', "expected a JSON string or object"),
    (b'{"prompt": "\xff"}', "not valid UTF-8"),
])
def test_each_bad_line_kind_names_its_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = _write(tmp_path / "p.jsonl", b'"good"\n\n' + line + b'\n"also good"\n')
    items = _items(path, "jsonl")
    problems = [i for i in items if isinstance(i, Problem)]
    assert len(problems) == 1, problems
    assert problems[0].line == 3
    assert message in problems[0].message
    assert str(problems[0]).startswith(f"{path}:3: ")
    assert [i.id for i in items if isinstance(i, PromptLine)] == ["1", "4"]


def test_no_model_anywhere_is_a_problem_per_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", b'"a"\n{"prompt": "b", "model": "x"}\n')
    items = _items(path, "jsonl", model=None)
    assert isinstance(items[0], Problem) and "pass -m MODEL" in items[0].message
    assert isinstance(items[1], PromptLine)


@pytest.mark.parametrize("data", [
    b'\xef\xbb\xbf"one"\r\n{"prompt": "two"}\r\n"three"',           # BOM, CRLF, no final newline
    b'"one"\n{"prompt": "two"}\n"three"\n',
    b'"one"\r\n{"prompt": "two"}\n\r\n"three"\r\n',
])
def test_bom_crlf_and_missing_final_newline(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "p.jsonl", data)
    items = _items(path, "jsonl")
    assert [i.prompt for i in items] == ["one", "two", "three"]


def test_txt_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.txt", b"\xef\xbb\xbffirst\r\n\r\n  \nsecond line\nthird")
    items = _items(path, "txt")
    assert [(i.id, i.prompt) for i in items] == [("1", "first"), ("4", "second line"),
                                                 ("5", "third")]


def test_csv_columns_quoted_newlines_and_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", (
        '\ufeffid,Prompt,system,extra\r\n'
        'a,hello,,x\r\n'
        ',"two\nlines",be brief,y\r\n'
        '\r\n'
        'c,,,\r\n'
        'd,last,,\r\n').encode())
    items = _items(path, "csv")
    assert isinstance(items[0], PromptLine) and items[0].id == "a" and items[0].system is None
    assert isinstance(items[1], PromptLine) and items[1].id == "3"
    assert items[1].prompt == "two\nlines" and items[1].system == "be brief"
    assert isinstance(items[2], Problem) and items[2].line == 6 and "empty" in items[2].message
    assert isinstance(items[3], PromptLine) and items[3].id == "d" and items[3].line == 7


def test_csv_without_prompt_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", b"id,text\n1,hi\n")
    items = _items(path, "csv")
    assert len(items) == 1 and isinstance(items[0], Problem)
    assert items[0].line == 1 and 'no "prompt" column' in items[0].message



def test_detect_format() -> None:
    assert detect_format("a.JSONL") == "jsonl"
    assert detect_format("a.txt") == "txt"
    assert detect_format("a.csv") == "csv"
    assert detect_format("-") == "jsonl"
    assert detect_format("a.dat", "txt") == "txt"
    with pytest.raises(ConfigError, match="--input-format"):
        detect_format("a.dat")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read prompt file"):
        _items(str(tmp_path / "nope.jsonl"), "jsonl")


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.txt", b"a\nb\n")
    iterator = read_prompts(path, "txt", default_model="m")
    first = next(iterator)
    assert isinstance(first, PromptLine) and first.prompt == "a"
    iterator.close()  # type: ignore[attr-defined]
