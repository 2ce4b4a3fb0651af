"""The first pass over a prompt file (``streamkit.batch.check``)."""

from __future__ import annotations

import io
from pathlib import Path

from streamkit.batch import check_prompts
from streamkit.batch.check import IdChecker
from streamkit.batch.input import PromptLine


def test_duplicate_ids() -> None:
    checker = IdChecker()
    assert checker.check(PromptLine(1, "a", prompt="x"), "f") is None
    assert checker.check(PromptLine(2, "b", prompt="x"), "f") is None
    problem = checker.check(PromptLine(5, "a", prompt="x"), "f")
    assert problem is not None and problem.line == 5 and "first on line 1" in problem.message


def test_check_streams_stdin_and_counts_done(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "2", "response": "x"}\n')
    stdin = io.BytesIO(b'"a"\n"b"\n{"prompt": 5}\n')
    report = check_prompts("-", str(out), model="m", stdin=stdin)
    assert (report.prompts, report.done, report.problem_count) == (2, 1, 1)
    assert str(report.problems[0]).startswith("<stdin>:3: ")
