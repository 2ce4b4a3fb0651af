"""``streamkit batch`` (``streamkit.cli.batch``): the command line over run_batch."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from batchfiles import expected as _expected
from batchfiles import lines as _lines
from batchfiles import write as _write

from streamkit import emulator
from streamkit.cli import main


@pytest.fixture()
def emu() -> Iterator[Any]:
    with emulator.Emulator(emulator.EmulatorConfig(parallel=4)) as server:
        yield server


def test_cli_runs_csv_and_stdin(tmp_path: Path, emu: Any, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _write(tmp_path / "p.csv", b"id,prompt,model\na,first,\nb,second,demo\n")
    out = str(tmp_path / "out.jsonl")
    code = main(["batch", csv_path, "-o", out, "-m", "demo", "--host", f"{emu.url}=2",
                 "--option", "num_predict=4", "--quiet"])
    assert code == 0
    records = {r["id"]: r for r in _lines(out)}
    assert sorted(records) == ["a", "b"]
    assert records["a"]["response"] == _expected("first", options={"num_predict": 4})
    assert "done: 2 ok, 0 failed" in capsys.readouterr().err

    class _Stdin:
        buffer = io.BytesIO(b'{"id": "s", "prompt": "from stdin"}\n')

    monkeypatch.setattr("sys.stdin", _Stdin())
    out2 = str(tmp_path / "out2.jsonl")
    assert main(["batch", "-", "-o", out2, "-m", "demo", "--host", emu.url, "--quiet"]) == 0
    assert [r["id"] for r in _lines(out2)] == ["s"]


def test_cli_validation_exit_code_and_check(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.jsonl", b'"ok"\n{"prompt": 1}\n')
    out = str(tmp_path / "out.jsonl")
    assert main(["batch", prompts, "-o", out, "-m", "m", "--host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert f"{prompts}:2: " in err and not os.path.exists(out)
    assert main(["batch", prompts, "--check", "-m", "m"]) == 2
    captured = capsys.readouterr()
    assert "1 valid prompt(s), 1 bad line(s)" in captured.out
    good = _write(tmp_path / "g.txt", b"one\ntwo\n")
    assert main(["batch", good, "--check", "-m", "m"]) == 0
