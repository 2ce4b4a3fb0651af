"""streamkit batch: prompt files, validation, output/resume files, and runs
against the in-process emulator (Python API and CLI)."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from streamkit.batch import BatchConfig, PromptFileError, check_prompts, run_batch
from streamkit.batch.input import IdChecker, Problem, PromptLine, detect_format, read_prompts
from streamkit.batch.output import (
    ErrorLog,
    RecordWriter,
    errors_path,
    repair,
    result_record,
    scan_output,
)
from streamkit.batch.run import build_request
from streamkit.errors import ConfigError, ConnectError
from streamkit.records import ChatRequest, GenerateRequest, Result, Stats, Timing


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _items(path: str, fmt: str, model: Any = "m") -> List[Any]:
    return list(read_prompts(path, fmt, default_model=model))


def _lines(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


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


def test_duplicate_ids() -> None:
    checker = IdChecker()
    assert checker.check(PromptLine(1, "a", prompt="x"), "f") is None
    assert checker.check(PromptLine(2, "b", prompt="x"), "f") is None
    problem = checker.check(PromptLine(5, "a", prompt="x"), "f")
    assert problem is not None and problem.line == 5 and "first on line 1" in problem.message


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


# --- requests ------------------------------------------------------------------


def test_line_fields_override_defaults() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", model="dm", system="ds",
                         options={"temperature": 0, "seed": 1}, format="json", think=False)
    plain = build_request(PromptLine(1, "1", prompt="hi"), config)
    assert plain == GenerateRequest("dm", "hi", system="ds", options={"temperature": 0, "seed": 1},
                                    format="json", think=False, id="1")
    line = PromptLine(2, "x", prompt="hi", model="lm", system="ls", options={"seed": 2},
                      format={"type": "object"}, think=True)
    custom = build_request(line, config)
    assert custom == GenerateRequest("lm", "hi", system="ls",
                                     options={"temperature": 0, "seed": 2},
                                     format={"type": "object"}, think=True, id="x")


def test_chat_lines_get_the_system_message_unless_they_have_one() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", model="m", system="sys")
    user = [{"role": "user", "content": "hi"}]
    request = build_request(PromptLine(1, "1", messages=user), config)
    assert isinstance(request, ChatRequest)
    assert list(request.messages) == [{"role": "system", "content": "sys"}, *user]
    own = [{"role": "system", "content": "mine"}, *user]
    request = build_request(PromptLine(1, "1", messages=own), config)
    assert isinstance(request, ChatRequest) and list(request.messages) == own


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not be the prompt file"):
        BatchConfig("same.jsonl", "same.jsonl")
    with pytest.raises(ConfigError, match="workers"):
        BatchConfig("p.jsonl", "o.jsonl", workers=0)
    with pytest.raises(ConfigError, match="output must be a file"):
        BatchConfig("p.jsonl", "-")


# --- validation before any request ------------------------------------------------


def test_run_batch_reports_all_problems_before_any_request(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"prompt": "a", "id": "x"}\n{"prompt": 1}\nnot json\n'
                     b'{"prompt": "b", "id": "x"}\n')
    out = tmp_path / "out.jsonl"
    # No server exists at this host: reaching it would be a ConnectError, not a PromptFileError.
    with pytest.raises(PromptFileError) as info:
        run_batch(prompts, str(out), model="m", hosts=["http://127.0.0.1:9"])
    assert [p.line for p in info.value.problems] == [2, 3, 4]
    assert "duplicate id 'x' (first on line 1)" in str(info.value)
    assert "--skip-invalid" in str(info.value)
    assert not out.exists()


def test_problem_list_is_capped_with_a_count(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", b"{bad\n" * 30)
    with pytest.raises(PromptFileError) as info:
        run_batch(prompts, str(tmp_path / "o.jsonl"), model="m")
    assert len(info.value.problems) == 20 and info.value.total == 30
    assert "... and 10 more" in str(info.value)


def test_check_streams_stdin_and_counts_done(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "2", "response": "x"}\n')
    stdin = io.BytesIO(b'"a"\n"b"\n{"prompt": 5}\n')
    report = check_prompts("-", str(out), model="m", stdin=stdin)
    assert (report.prompts, report.done, report.problem_count) == (2, 1, 1)
    assert str(report.problems[0]).startswith("<stdin>:3: ")


# --- output and resume -------------------------------------------------------------


def test_errors_path() -> None:
    assert errors_path("results.jsonl") == "results.errors.jsonl"
    assert errors_path("dir/out.txt") == "dir/out.txt.errors.jsonl"


def _ok_result(rid: str, text: str = "hi") -> Result:
    return Result(id=rid, model="m", host="http://h:1", text=text, done_reason="stop",
                  stats=Stats(eval_count=2), timing=Timing(started_ns=0, sent_ns=10**6,
                                                           first_token_ns=3 * 10**6,
                                                           done_ns=5 * 10**6, chunks=2),
                  attempts=1)


def test_result_record_shape() -> None:
    record = result_record(_ok_result("a"), "a")
    assert list(record) == ["id", "model", "host", "response", "done_reason", "stats",
                            "timing", "attempts"]
    assert record["timing"] == {"ttft_ms": 2.0, "total_ms": 5.0, "chunks": 2}
    cached = _ok_result("b")
    cached.thinking, cached.cached = "hmm", True
    record = result_record(cached, "b")
    assert record["thinking"] == "hmm" and record["cached"] is True


def test_writer_one_line_per_record_and_no_duplicates(tmp_path: Path) -> None:
    path = str(tmp_path / "o.jsonl")
    writer = RecordWriter(path)
    assert writer.write({"id": "a", "response": "x\ny"})
    assert not writer.write({"id": "a", "response": "again"})
    writer.close()
    writer.close()
    assert _lines(path) == [{"id": "a", "response": "x\ny"}]


@pytest.mark.parametrize("tail", [b'{"id": "c", "resp', b'{"id": "c"}', b"\x00\x00\x00\n",
                                  b'{"no_id": 1}\n'])
def test_torn_last_line_is_detected_and_repaired(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "o.jsonl"
    good = b'{"id": "a"}\n{"id": "b"}\n'
    path.write_bytes(good + tail)
    state = scan_output(str(path))
    assert state.done == {"a", "b"} and state.torn_bytes == len(tail)
    repair(str(path), state)
    assert path.read_bytes() == good


def test_bad_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"id": "a"}\ngarbage\n{"id": "b"}\n')
    with pytest.raises(ConfigError, match=r"o\.jsonl:2: not a JSON result record"):
        scan_output(str(path))


def test_error_log_keeps_the_latest_failure_of_unfinished_ids(tmp_path: Path) -> None:
    path = str(tmp_path / "o.errors.jsonl")
    Path(path).write_text('{"id": "a", "type": "Old"}\n{"id": "b", "type": "Old"}\n{"id": "c"\n')
    log = ErrorLog(path, done={"b"}, resume=True)
    assert [r["id"] for r in _lines(path)] == ["a"]  # b is done; the torn line is gone
    log.add({"id": "a", "type": "New"})
    log.add({"id": "d", "type": "New"})
    log.close(done={"b", "d"})
    assert _lines(path) == [{"id": "a", "type": "New"}]
    ErrorLog(path, done={"a"}, resume=True).close(done={"a"})
    assert not os.path.exists(path)  # no entries: no file


# --- runs against the emulator -----------------------------------------------------

emulator = pytest.importorskip("streamkit.emulator")


@pytest.fixture()
def emu() -> Iterator[Any]:
    with emulator.Emulator(emulator.EmulatorConfig(parallel=4)) as server:
        yield server


def _prompts(tmp_path: Path, n: int, name: str = "p.jsonl") -> str:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"prompt number {i}"}) for i in range(n)]
    return _write(tmp_path / name, ("\n".join(lines) + "\n").encode())


def _expected(prompt: str, model: str = "demo", **body: Any) -> str:
    text: str = emulator.expected(model, {"prompt": prompt, **body}).text
    return text


def test_run_writes_every_id_once_with_the_right_text(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 12)
    out = str(tmp_path / "out.jsonl")
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], workers=4)
    assert (summary.ok, summary.failed, summary.exit_code) == (12, 0, 0)
    records = {r["id"]: r for r in _lines(out)}
    assert sorted(records) == sorted(f"q{i}" for i in range(12))
    for i in range(12):
        record = records[f"q{i}"]
        assert record["response"] == _expected(f"prompt number {i}")
        assert record["host"] == emu.url and record["done_reason"] == "stop"
        assert record["stats"]["eval_count"] > 0 and record["attempts"] == 1
    assert not os.path.exists(errors_path(out))
    # Resume: nothing left to do, nothing sent.
    before = emu.counters()["inference"]
    again = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (again.ok, again.skipped, again.exit_code) == (0, 12, 0)
    assert emu.counters()["inference"] == before
    assert len(_lines(out)) == 12


def test_ordered_output_follows_input_order(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 10)
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url], workers=4, ordered=True)
    assert [r["id"] for r in _lines(out)] == [f"q{i}" for i in range(10)]


def test_failures_go_to_the_error_file_and_are_retried(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "good", "prompt": "x"}\n{"id": "bad", "prompt": "y", '
                     b'"model": "no-such-model"}\n')
    out = str(tmp_path / "out.jsonl")
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (summary.ok, summary.failed, summary.exit_code) == (1, 1, 1)
    errors = _lines(errors_path(out))
    assert len(errors) == 1
    assert errors[0]["id"] == "bad" and errors[0]["line"] == 2
    assert errors[0]["type"] == "ModelNotFound" and "no-such-model" in errors[0]["message"]
    assert errors[0]["attempts"] == 1 and errors[0]["host"] == emu.url
    # The next run retries only the failed id; the error file then holds its latest failure.
    before = emu.counters()["inference"]
    again = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (again.ok, again.failed, again.skipped) == (0, 1, 1)
    assert emu.counters()["inference"] == before + 1
    assert [e["id"] for e in _lines(errors_path(out))] == ["bad"]


def test_skip_invalid_runs_the_good_lines(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'"a"\n{"prompt": 1}\n"a"\n{"id": "1", "prompt": "dup"}\n')
    out = str(tmp_path / "out.jsonl")
    messages: List[str] = []
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], skip_invalid=True,
                        report=messages.append)
    assert (summary.ok, summary.invalid, summary.exit_code) == (2, 2, 1)
    assert sorted(r["id"] for r in _lines(out)) == ["1", "3"]
    assert any(":2: " in m for m in messages) and any(":4: duplicate id" in m for m in messages)


def test_per_line_options_reach_the_server(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "short", "prompt": "x", "options": {"num_predict": 3}}\n'
                     b'{"id": "default", "prompt": "x"}\n')
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url], options={"num_predict": 5})
    records = {r["id"]: r for r in _lines(out)}
    assert records["short"]["stats"]["eval_count"] == 3
    assert records["default"]["stats"]["eval_count"] == 5
    assert records["short"]["response"] == _expected("x", options={"num_predict": 3})


def test_stop_event_cancels_in_flight_streams(tmp_path: Path) -> None:
    config = emulator.EmulatorConfig(parallel=4, tokens_per_second=20)
    with emulator.Emulator(config) as server:
        prompts = _prompts(tmp_path, 20)
        out = str(tmp_path / "out.jsonl")
        stop = threading.Event()
        outcome: Dict[str, Any] = {}

        def run() -> None:
            outcome["summary"] = run_batch(prompts, out, model="demo", hosts=[server.url],
                                           workers=4, options={"num_predict": 200}, stop=stop)

        thread = threading.Thread(target=run)
        thread.start()
        assert server.wait_until(lambda c: c["in_flight"] >= 4, timeout=10)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        summary = outcome["summary"]
        assert summary.interrupted and summary.exit_code == 130
        assert summary.not_run == 20 and summary.ok == 0
        assert server.wait_until(lambda c: c["disconnects"] >= 4, timeout=5)
    assert not os.path.exists(errors_path(out))  # a cancel is not a failure


def test_unreachable_host_fails_every_prompt(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path, 2)
    out = str(tmp_path / "out.jsonl")
    from streamkit.config import RetryPolicy
    summary = run_batch(prompts, out, model="demo", hosts=["http://127.0.0.1:9"],
                        retry=RetryPolicy(attempts=1))
    assert (summary.ok, summary.failed, summary.exit_code) == (0, 2, 1)
    assert {e["type"] for e in _lines(errors_path(out))} == {ConnectError.__name__}


def test_cache_second_run_sends_nothing_and_writes_the_same_answers(tmp_path: Path,
                                                                     emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y", "think": true}\n'
                     b'{"id": "c", "messages": [{"role": "user", "content": "z"}]}\n')
    cache = str(tmp_path / "cache.db")
    first, second = str(tmp_path / "first.jsonl"), str(tmp_path / "second.jsonl")
    summary = run_batch(prompts, first, model="demo", hosts=[emu.url], cache=cache)
    assert (summary.ok, summary.cached) == (3, 0)
    before = emu.counters()
    summary = run_batch(prompts, second, model="demo", hosts=[emu.url], cache=cache)
    assert (summary.ok, summary.cached) == (3, 3)
    after = emu.counters()
    assert (after["inference"], after["requests"]) == (before["inference"], before["requests"])

    def answer(record: Dict[str, Any]) -> Dict[str, Any]:
        keep = ("id", "model", "response", "thinking", "done_reason", "stats")
        return {k: record.get(k) for k in keep}

    fresh = sorted(_lines(first), key=lambda r: r["id"])
    cached = sorted(_lines(second), key=lambda r: r["id"])
    assert [answer(r) for r in fresh] == [answer(r) for r in cached]
    assert all(r["cached"] is True for r in cached) and not any("cached" in r for r in fresh)
    assert fresh[1]["thinking"]  # the think request's reasoning survives the cache


def test_no_resume_starts_over(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 3)
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url])
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], resume=False)
    assert (summary.ok, summary.skipped) == (3, 0)
    assert len(_lines(out)) == 3


def test_cli_runs_csv_and_stdin(tmp_path: Path, emu: Any, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from streamkit.cli import main
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
    from streamkit.cli import main
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
