"""The first pass over a prompt file (``streamkit.batch.check``)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from streamkit.batch import check_prompts
from streamkit.batch.check import IdChecker
from streamkit.batch.promptline import PromptLine


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


def test_check_memory_does_not_grow_with_the_number_of_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Past SPILL_AFTER ids the index moves to a temporary file: the Python heap
    # then stays flat however long the file is (100k ids in a dict take ~12 MB).
    monkeypatch.setattr("streamkit.batch.check.SPILL_AFTER", 1_000, raising=False)
    path = tmp_path / "big.jsonl"
    rows = [f'{{"id": "q{i:06d}", "prompt": "p"}}' for i in range(100_000)]
    rows.append('{"id": "q000007", "prompt": "again"}')
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "q000001"}\n{"id": "q099999"}\n{"id": "gone"}\n')
    tracemalloc.start()
    try:
        report = check_prompts(str(path), str(out), model="m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.prompts, report.done, report.problem_count) == (100_000, 2, 1)
    assert "first on line 8" in report.problems[0].message
    assert peak < 3_000_000, f"peak Python heap {peak / 1e6:.1f} MB"
